"""Which nails the model misses: recall by how well a nail fits the model's best-fitting anchor.

A region proposal network learns to propose a nail only from anchors matched to it in training:
mmdet's ``MaxIoUAssigner`` gives a nail its best anchor(s) only if their box IoU reaches
``train_cfg.rpn.assigner.min_pos_iou``. A 15 px nail in a 432 px photo fits the smallest default
anchor (32 px at stride 4) with IoU ~0.2: below mmdet's default 0.3, such nails were never a
positive anchor. This prints, for a COCO ground truth at a score threshold, the nails in buckets
of their best anchor IoU (the model's own anchor generator, at the size the model sees the photo),
each bucket's recall (one-to-one match at mask IoU >= 0.5, after the threshold and duplicate
suppression, as ``nailseg evaluate`` counts it) and its median nail area; then what became of the
missed nails: a detection with a matching box (IoU >= 0.5) that scores under the threshold, a shown
one whose box matches but whose mask does not, or no detection near (box IoU < 0.3 at any score).

Usage::

    PYTHONPATH=. .venv/bin/python bench/small_nails.py --ann-file data/roboflow/valid.json \\
        --img-dir ../shared/data/nails-roboflow [--weights W] [--score-thr T]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from nailseg.datasets import load_coco
from nailseg.dedup import shown_nails
from nailseg.evaluate import coco_nails, match_masks
from nailseg.images import load_image_rgb
from nailseg.inference import load_model

BUCKETS = (0.0, 0.2, 0.3, 0.4, 0.5, 1.01)
COLUMNS = ("anchor_iou", "matched", "area", "box_iou_any", "box_iou_shown")


def best_anchor_iou(prior_generator, boxes_xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Each box's best IoU with any anchor of a ``height x width`` input (boxes in its pixels)."""
    from mmdet.structures.bbox import bbox_overlaps

    if not len(boxes_xyxy):
        return np.zeros(0)
    sizes = [(math.ceil(height / s[1]), math.ceil(width / s[0])) for s in prior_generator.strides]
    anchors = torch.cat(prior_generator.grid_priors(sizes, device="cpu"))
    boxes = torch.as_tensor(boxes_xyxy, dtype=torch.float32)
    return bbox_overlaps(boxes, anchors).max(dim=1).values.numpy()


def nails_by_anchor_fit(segmenter, gt: dict, img_dir: Path, thr: float, priors=None) -> np.ndarray:
    """One row per labelled nail of ``gt``: best anchor IoU, matched at ``thr``, area in photo
    pixels, best box IoU with any detection, and with any shown at ``thr`` (:data:`COLUMNS`).

    ``priors``: the anchor generator to measure the fit with (default: the segmenter's own).
    """
    from mmcv import rescale_size
    from mmdet.structures.bbox import bbox_overlaps

    priors = priors or segmenter.model.rpn_head.prior_generator
    resize = next(t for t in segmenter.pipeline.transforms if type(t).__name__ == "Resize")
    rows = []
    for image in gt["images"]:
        photo = load_image_rgb(Path(img_dir) / image["file_name"])
        detections, to_photo = segmenter.detect(photo)
        truth = coco_nails(gt, image)
        if not len(truth):
            continue
        seen_h, seen_w = detections.masks.shape[1:]  # detect() may shrink a large photo first
        (input_w, input_h), factor = rescale_size((seen_w, seen_h), resize.scale, return_scale=True)
        ious = best_anchor_iou(priors, truth.boxes_xyxy * (seen_w / photo.shape[1] * factor), input_h, input_w)
        candidates = to_photo(shown_nails(detections, 0.0, segmenter.dedup))
        shown = to_photo(shown_nails(detections, thr, segmenter.dedup))
        matched = {int(j) for _, j in match_masks(shown.masks, truth.masks)}
        boxes = torch.as_tensor(truth.boxes_xyxy, dtype=torch.float32)
        best_any, best_shown = (
            bbox_overlaps(torch.as_tensor(n.boxes_xyxy), boxes).max(dim=0).values.numpy()
            if len(n)
            else np.zeros(len(truth))
            for n in (candidates, shown)
        )
        areas = truth.masks.reshape(len(truth), -1).sum(axis=1)
        rows += [(ious[j], j in matched, areas[j], best_any[j], best_shown[j]) for j in range(len(truth))]
    return np.array(rows, dtype=float).reshape(-1, len(COLUMNS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann-file", type=Path, required=True, help="COCO ground truth")
    parser.add_argument("--img-dir", type=Path, required=True, help="folder the file_name entries are relative to")
    parser.add_argument("--weights", default=None, help="weights spec (default: $NAILSEG_WEIGHTS, then bundled)")
    parser.add_argument("--score-thr", type=float, default=None, help="default: the model's own")
    parser.add_argument("--limit", type=int, default=None, help="first N photos (quick look)")
    parser.add_argument(
        "--anchors-of",
        default=None,
        metavar="WEIGHTS",
        help="bucket by these weights' anchors instead (two models compared nail for nail on the same buckets)",
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    segmenter = load_model(args.weights, device="cpu")
    thr = segmenter.score_thr if args.score_thr is None else args.score_thr
    anchors_of = load_model(args.anchors_of, device="cpu") if args.anchors_of else segmenter
    priors = anchors_of.model.rpn_head.prior_generator
    gt = load_coco(args.ann_file)
    table = nails_by_anchor_fit(segmenter, {**gt, "images": gt["images"][: args.limit]}, args.img_dir, thr, priors)

    print(
        f"weights: {segmenter.weights.source}; score >= {thr}; anchors (of {anchors_of.weights.source}): "
        f"strides {[s[0] for s in priors.strides]}, "
        f"scales {priors.scales.tolist()}, ratios {priors.ratios.tolist()}"
    )
    print(f"{'best anchor IoU':>16s} {'nails':>6s} {'recall':>7s} {'median area px':>15s}")
    for lo, hi in zip(BUCKETS, BUCKETS[1:]):
        sel = (table[:, 0] >= lo) & (table[:, 0] < hi)
        if sel.any():
            print(
                f"{f'{lo:.1f}-{min(hi, 1.0):.1f}':>16s} {int(sel.sum()):6d} {table[sel, 1].mean():7.3f} "
                f"{np.median(table[sel, 2]):15.0f}"
            )
    print(f"{'all':>16s} {len(table):6d} {table[:, 1].mean():7.3f} {np.median(table[:, 2]):15.0f}")
    missed = table[table[:, 1] == 0]
    loose = missed[:, 4] >= 0.5
    print(
        f"\nmissed {len(missed)}: a detection with a matching box scored under {thr}: "
        f"{int(((missed[:, 3] >= 0.5) & ~loose).sum())}; a shown one with a matching box and a loose mask: "
        f"{int(loose.sum())}; no detection near (box IoU < 0.3 at any score): {int((missed[:, 3] < 0.3).sum())}"
    )
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
