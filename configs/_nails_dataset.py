# Nails as written by `nailseg convert`: COCO json (polygons, RLE where a polygon cannot hold a
# nail), one class. `nailseg train --data DIR` fills in data_root and the ann_file paths.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

metainfo = dict(classes=('nail',), palette=[(220, 20, 60)])
data_root = ''

train_pipeline = [
    dict(type='LoadImageFromFile'),
    # poly2mask=True: mmdet's polygon path silently drops RLE instances; this keeps every nail.
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),
    # The photos are 432 px; train around that size instead of COCO's 1333x800.
    dict(type='RandomResize', scale=(432, 432), ratio_range=(0.8, 1.2), keep_ratio=True),
    # Hands appear in every orientation.
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(432, 432), keep_ratio=True),  # the training scale
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=1,  # one process decodes while the main one trains; raise it where there are more cores
    sampler=dict(type='InfiniteSampler'),  # iteration-based loop, resumable mid-epoch
    dataset=dict(metainfo=metainfo, data_root=data_root, ann_file='train.json', data_prefix=dict(img=''),
                 pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(metainfo=metainfo, data_root=data_root, ann_file='valid.json', data_prefix=dict(img=''),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(ann_file='valid.json')
test_evaluator = val_evaluator
