# Second stage of the default model: the 1,600-iteration run of the base config, trained on for
# 2,200 more iterations with a fresh warmup and cosine (a warm restart). Its loss was still falling
# when the first schedule ran out; one 3,800-iteration schedule from scratch should do as well.
#   nailseg train --data data/roboflow                                   # stage 1 (base config)
#   nailseg train configs/mask-rcnn_effilite0_fpn-128_nails-ft.py --data data/roboflow
_base_ = './mask-rcnn_effilite0_fpn-128_nails.py'

# Stage 1's last checkpoint (your own run's; the model part is used), where `nailseg train` puts it
# by default, relative to where you run it. Stage 1 elsewhere: `--load-from W/iter_1600.pth`.
load_from = 'work_dirs/mask-rcnn_effilite0_fpn-128_nails/iter_1600.pth'

max_iters = 2200
train_cfg = dict(max_iters=max_iters, val_interval=1100)
optim_wrapper = dict(optimizer=dict(lr=0.008))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_iters - 100, eta_min=1e-4, by_epoch=False, begin=100,
         end=max_iters),
]
