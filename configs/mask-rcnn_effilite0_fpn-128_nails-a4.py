# Issue 21 candidate: anchors an octave smaller. mmdet's scales=[8] on strides 4-64 gives anchors of
# 32-512 px; at 432 px a small nail is 10-16 px across, and 293 of the 2,479 validation nails fit no
# anchor at IoU >= 0.3 (the RPN's floor for a positive), against 31 with scales=[4] (16-256 px; the
# largest nail of a 432 px photo is well under 256 px). Same number of anchors: same speed, and the
# RPN's weights load (they are retrained to the new sizes).
_base_ = './mask-rcnn_effilite0_fpn-128_nails.py'

model = dict(rpn_head=dict(anchor_generator=dict(scales=[4])))
