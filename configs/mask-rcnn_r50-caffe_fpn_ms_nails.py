# The seed tutorial's model: Mask R-CNN R50-caffe FPN, multi-scale training, fine-tuned from
# OpenMMLab's COCO Mask R-CNN. For GPU users who are online; `nailseg train` drops the download
# (with a warning) when OpenMMLab's server cannot be reached, and then trains from scratch heads.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_nails_dataset.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(
    # caffe-style ResNet: BGR input, no std scaling, frozen BatchNorm (as mask-rcnn_r50-caffe_fpn_1x).
    data_preprocessor=dict(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    backbone=dict(norm_cfg=dict(requires_grad=False), style='caffe',
                  init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://detectron2/resnet50_caffe')),
    roi_head=dict(bbox_head=dict(num_classes=1), mask_head=dict(num_classes=1)))  # one class: nail

# Multi-scale training as in mask-rcnn_r50-caffe_fpn_ms-poly-1x_coco.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),  # keep RLE nails
    dict(type='RandomChoiceResize', scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                                            (1333, 768), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=2, sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# 12 epochs, lr for batch 2 (the 1x schedule's 0.02 is for 16 photos).
optim_wrapper = dict(optimizer=dict(lr=0.0025))
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2, save_last=True))
load_from = ('https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco/'
             'mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco_bbox_mAP-0.408__segm_mAP-0.37_20200504_163245-42aa3d00.pth')
