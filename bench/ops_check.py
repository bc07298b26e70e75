"""mmcv's RoIAlign and NMS, as this Python finds them, against plain-PyTorch references.

    python bench/ops_check.py [--device cuda]

RoIAlign is compared, output and gradient, with ``nailseg.roi_align`` (itself tested against mmcv's
compiled CPU op in ``tests/test_roi_align.py``) on random and degenerate RoIs (empty, under a pixel,
past the image's edge); NMS with a greedy reference. On the lent GPU machine
``scripts/gpu_check.sh`` runs it over the torchvision-backed ``mmcv._ext``
(``scripts/mmcv_ext_torchvision.py``) before training with it, and builds mmcv instead if it fails.
Prints one JSON line; exit 1 when an op differs by more than 1e-4.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from nailseg.roi_align import roi_align as reference_roi_align

TOLERANCE = 1e-4


def random_rois(n: int, images: int, size: float, generator: torch.Generator) -> torch.Tensor:
    """RoIs as (index, x1, y1, x2, y2): most inside an image of ``size`` px, some degenerate."""
    xy = torch.rand(n, 2, generator=generator) * size * 1.2 - 0.1 * size
    wh = torch.rand(n, 2, generator=generator) * size * 0.6
    index = torch.randint(0, images, (n, 1), generator=generator).float()
    rois = torch.cat([index, xy, xy + wh], 1)
    rois[: n // 10, 3:] = rois[: n // 10, 1:3]  # empty
    rois[n // 10 : n // 5, 3:] = rois[n // 10 : n // 5, 1:3] + 0.3  # under a pixel
    rois[n // 5 : n // 4, 1:3] = -size * 0.5  # reaching far past the top left
    rois[n // 4 : n // 4 + 3, 3:] = size * 1.7  # and the bottom right
    return rois


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: highest score first, drop every box with IoU > threshold with a kept one."""
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    iou = inter / (area[:, None] + area[None, :] - inter)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in scores.argsort(descending=True).tolist():
        if not suppressed[i]:
            keep.append(i)
            suppressed |= (iou[i] > iou_threshold).cpu()
    return torch.tensor(keep, dtype=torch.long)


def check(device: str = "cpu", seed: int = 0) -> dict:
    """Max differences of mmcv.ops' roi_align (output, gradient) and nms from the references."""
    from mmcv.ops import nms, roi_align

    generator = torch.Generator().manual_seed(seed)
    result = {"device": device}
    worst = 0.0
    for scale, out, sampling, aligned in ((0.25, 7, 0, True), (0.125, 14, 0, True), (0.25, 7, 2, False)):
        features = torch.randn(2, 16, 27, 31, generator=generator)
        rois = random_rois(200, 2, 1 / scale * 27, generator)
        grad_out = torch.randn(len(rois), 16, out, out, generator=generator)
        outputs, grads = [], []
        for op in (roi_align, reference_roi_align):
            x = features.clone().to(device).requires_grad_()  # a leaf of its own per op
            if op is roi_align:
                y = op(x, rois.to(device), (out, out), scale, sampling, "avg", aligned)
            else:
                y = op(x, rois.to(device), (out, out), scale, sampling, aligned)
            y.backward(grad_out.to(device))
            outputs.append(y.detach().cpu())
            grads.append(x.grad.detach().cpu().clone())
        key = f"roi_align_{out}x{out}_scale{scale}_sampling{sampling}_{'aligned' if aligned else 'legacy'}"
        result[key] = {
            "output": float((outputs[0] - outputs[1]).abs().max()),
            "grad": float((grads[0] - grads[1]).abs().max()),
        }
        worst = max(worst, *result[key].values())
    boxes = torch.rand(300, 2, generator=generator) * 100
    boxes = torch.cat([boxes, boxes + torch.rand(300, 2, generator=generator) * 40 + 1], 1)
    scores = torch.rand(300, generator=generator)
    _, kept = nms(boxes.to(device), scores.to(device), 0.5)
    expected = reference_nms(boxes, scores, 0.5)
    result["nms_same_kept"] = kept.cpu().tolist() == expected.tolist()
    result["nms_kept"] = len(expected)
    result["ok"] = worst <= TOLERANCE and result["nms_same_kept"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    result = check(args.device)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
