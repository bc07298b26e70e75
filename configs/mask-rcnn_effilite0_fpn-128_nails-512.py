# Issue 21 candidate: the default model seeing each photo at 512 px instead of 432 (1.4x the pixels:
# a 12 px nail becomes 14 px), in training (random resize 0.8-1.2 around 512) and at test time.
# Test-time scale alone does not pay (stage 6 at 480 or 512 px: F1 -0.003 to -0.005, segm AP -0.004 to
# 0, checkpoints/README.md); the model has to be trained at the scale it answers at.
_base_ = './mask-rcnn_effilite0_fpn-128_nails.py'

scale = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),  # keep RLE nails
    dict(type='RandomResize', scale=scale, ratio_range=(0.8, 1.2), keep_ratio=True),
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
