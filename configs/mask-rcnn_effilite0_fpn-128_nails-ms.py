# Issue 21 candidate, measured on the GPU on 2026-12-04 (as "-a4-ms") and not adopted after 10
# minutes of training (checkpoints/README.md): the default config with the training photos seen at
# more sizes, crops and colours: each photo scaled to 0.6-1.6 x 432 px and a 432 px crop taken (so
# nails sit at the photo's edge, cut as the edge cuts them), with brightness, contrast, saturation
# and hue jitter for the phone light and the pale nails. Test scale unchanged (432 px).
_base_ = './mask-rcnn_effilite0_fpn-128_nails.py'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),  # keep RLE nails
    dict(type='RandomResize', scale=(432, 432), ratio_range=(0.6, 1.6), keep_ratio=True),
    # Boxes recomputed from the cropped masks: a nail cut by the crop gets a tight box.
    dict(type='RandomCrop', crop_size=(432, 432), recompute_bbox=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(2, 2), by_mask=True),  # slivers left by the crop
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    dict(type='PhotoMetricDistortion', brightness_delta=24, contrast_range=(0.75, 1.25),
         saturation_range=(0.75, 1.25), hue_delta=8),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
