"""``mmcv._ext`` for a lent GPU machine: mmcv's two CUDA ops that Mask R-CNN needs, from torchvision.

Building mmcv 2.1.0's CUDA extension takes about 4 of the GPU machine's 15 minutes
(``docs/gpu.md``). Its training and inference use two of the extension's functions only: RoIAlign
(forward and backward) and NMS. torchvision, already on that machine, has both as CUDA kernels with
the same definition (Detectron2's RoIAlign: ``aligned``, adaptive ``sampling_ratio=0``; greedy NMS
by IoU, highest score first). ``scripts/gpu_check.sh`` installs the pure-Python ``mmcv-lite`` wheel
and copies this file in as ``mmcv/_ext.py``; mmcv then imports it as if it were the compiled module.

Every other function of the extension exists here (``mmcv.ops`` checks for them at import) but
raises if it is ever called, so nothing falls back silently. ``tests/test_gpu_check.py`` checks the
two ops against mmcv's own compiled ones on the CPU.
"""

from __future__ import annotations

import torch
import torchvision  # noqa: F401 - registers torch.ops.torchvision


def roi_align_forward(
    input, rois, output, argmax_y, argmax_x, *, aligned_height, aligned_width, spatial_scale, sampling_ratio,
    pool_mode, aligned,
):  # fmt: skip
    if pool_mode != 1:
        raise NotImplementedError("mmcv._ext from torchvision: RoIAlign's max pooling is not provided")
    pooled = torch.ops.torchvision.roi_align(
        input, rois.to(input.dtype), spatial_scale, aligned_height, aligned_width, sampling_ratio, aligned
    )
    output.copy_(pooled)


def roi_align_backward(
    grad_output, rois, argmax_y, argmax_x, grad_input, *, aligned_height, aligned_width, spatial_scale,
    sampling_ratio, pool_mode, aligned,
):  # fmt: skip
    if pool_mode != 1:
        raise NotImplementedError("mmcv._ext from torchvision: RoIAlign's max pooling is not provided")
    batch, channels, height, width = grad_input.shape
    grad = torch.ops.torchvision._roi_align_backward(
        grad_output, rois.to(grad_output.dtype), spatial_scale, aligned_height, aligned_width, batch, channels,
        height, width, sampling_ratio, aligned,
    )  # fmt: skip
    grad_input.copy_(grad)


def nms(bboxes, scores, *, iou_threshold, offset):
    if offset != 0:
        raise NotImplementedError("mmcv._ext from torchvision: NMS with offset 1 (legacy boxes) is not provided")
    return torch.ops.torchvision.nms(bboxes, scores.to(bboxes.dtype), float(iou_threshold))


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise NotImplementedError(f"mmcv._ext from torchvision provides RoIAlign and NMS only, not {name}")

    return missing
