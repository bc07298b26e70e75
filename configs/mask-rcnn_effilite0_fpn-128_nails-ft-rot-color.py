# Third stage of the default model: the bundled weights (stages 1 and 2) trained on with the
# augmentations hand photos call for: any angle, other light and colour, a wider range of sizes.
#   nailseg train configs/mask-rcnn_effilite0_fpn-128_nails-ft-rot-color.py --data data/roboflow \
#       --load-from checkpoints/mask-rcnn_effilite0_fpn-128_nails.safetensors
_base_ = './mask-rcnn_effilite0_fpn-128_nails.py'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),  # keep RLE nails
    dict(type='RandomResize', scale=(432, 432), ratio_range=(0.7, 1.3), keep_ratio=True),  # was 0.8-1.2
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    # Hands at every angle: up to 45 degrees either way (flips cover the rest).
    dict(type='Rotate', prob=0.5, max_mag=45.0, img_border_value=(124, 116, 104)),
    dict(type='BoxesFromMasks'),  # Rotate's boxes are the boxes around rotated boxes: loose
    dict(type='FilterAnnotations', min_gt_bbox_wh=(2, 2), by_mask=True),  # nails turned out of the photo
    # Phone light and polish colours (brightness, contrast, saturation, hue).
    dict(type='PhotoMetricDistortion', brightness_delta=24, contrast_range=(0.75, 1.25),
         saturation_range=(0.75, 1.25), hue_delta=8),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_iters = 1200
train_cfg = dict(max_iters=max_iters, val_interval=600)
optim_wrapper = dict(optimizer=dict(lr=0.006))  # a fine-tune: below stage 2's 0.008
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_iters - 100, eta_min=1e-4, by_epoch=False, begin=100,
         end=max_iters),
]
