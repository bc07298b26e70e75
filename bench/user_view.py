"""What a user sees: is each nail reported once, and are the nails there the nails reported?

On a COCO ground truth (e.g. ``data/roboflow/valid.json``), at a score threshold, without and with
the model's duplicate suppression (``test_cfg.rcnn.mask_dedup``):

* nails reported / nails there; duplicate pairs (two reported nails with mask IoU >= 0.5, or one
  covering >= 70 % of the other) and the photos with any; photos with exactly the right count;
* precision / recall / F1 of a one-to-one matching at mask IoU >= 0.5;
* segm AP / AP50 / AP75 (pycocotools, every detection down to the model's own floor, as
  ``nailseg evaluate`` scores them);
* a sweep of the threshold (each row as above, without AP), and the threshold with the best F1
  (ties: the larger exact-count share).

On ``nails-semantic`` groups (one 0/255 mask per photo, every nail painted in): the mean IoU of the
union of the reported masks with the semantic mask, and the share of photos whose count is exact,
the true count being the number of 8-connected regions of >= 20 px in the mask (nails that touch
count as one region, so this undercounts hands with touching nails).

The model runs once per photo (``NailSegmenter.detect``: every detection it emits, at its own size);
thresholds and suppression are then applied exactly as ``NailSegmenter.predict`` does (threshold
first, then suppression on the model's masks, then back to the photo's size), which
``tests/test_dedup.py`` checks.

Usage::

    PYTHONPATH=. .venv/bin/python bench/user_view.py --ann-file data/roboflow/valid.json \\
        --img-dir ../shared/data/nails-roboflow --semantic ../shared/data/nails-semantic \\
        --label-fixes bench/label_fixes/roboflow-valid.csv

With ``--label-fixes``, the validation figures come twice: as labelled, and with the listed label
errors (each looked at, ``bench/label_audit.py``) made crowd regions, where nothing counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from nailseg.convert import DEFAULT_MIN_AREA, binarize_mask, mask_to_instances
from nailseg.datasets import discover, load_coco, load_mask
from nailseg.dedup import MaskDedup, mask_iou, shown_nails
from nailseg.evaluate import (
    SWEEP,
    Tally,
    apply_label_fixes,
    choose_threshold,
    coco_ap,
    coco_nails,
    coco_results,
    detect_photos,
    ignore_regions,
    nail_category_id,
)
from nailseg.images import load_image_rgb
from nailseg.inference import load_model
from nailseg.result import Nails

VARIANTS = ("no dedup", "dedup")


@dataclasses.dataclass
class SemanticTally:
    """Union-mask IoU and exact counts on photos with one semantic mask each, and where the wrong
    pixels are: predicted area against true area, and the IoU were every pixel within 1 px of
    the predicted outline right (what any edge refinement could reach at best)."""

    photos: int = 0
    iou_sum: float = 0.0
    exact: int = 0
    predicted_px: int = 0
    true_px: int = 0
    edge_fixed_iou_sum: float = 0.0

    def add(self, shown: Nails, truth: np.ndarray, true_count: int) -> None:
        union = shown.masks.any(axis=0)
        self.photos += 1
        self.iou_sum += _iou(union, truth)
        self.exact += len(shown) == true_count
        self.predicted_px += np.count_nonzero(union)
        self.true_px += np.count_nonzero(truth)
        inside = union.astype(np.uint8)
        near_edge = (cv2.distanceTransform(inside, cv2.DIST_L2, 3) <= 1) & union
        near_edge |= (cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3) <= 1) & ~union
        self.edge_fixed_iou_sum += _iou(np.where(near_edge, truth, union), truth)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks; 1 where both are empty (no nail, none shown: right)."""
    return float(mask_iou(a[None], b[None])[0, 0]) if (a.any() or b.any()) else 1.0


def run_coco(segmenter, dedup: MaskDedup, gts: dict[str, dict], img_dir: Path, thresholds: list[float]):
    """Per label set (``gts``: the same photos, labels as given or fixed): tallies per (variant,
    threshold) and segm AP per variant, from one model pass per photo."""
    first = next(iter(gts.values()))
    category_id = nail_category_id(first)
    tallies = {(name, v, t): Tally() for name in gts for v in VARIANTS for t in thresholds}
    results = {v: [] for v in VARIANTS}
    settings = dict(zip(VARIANTS, (None, dedup)))
    for photo in detect_photos(segmenter, first, img_dir):
        labels = {name: (coco_nails(gt, photo.image), ignore_regions(gt, photo.image)) for name, gt in gts.items()}
        for variant, option in settings.items():
            results[variant] += coco_results(
                photo.to_photo(shown_nails(photo.detections, 0.0, option)), photo.image["id"], category_id
            )
            for thr in thresholds:
                shown = photo.to_photo(shown_nails(photo.detections, thr, option))
                for name, (truth, ignore) in labels.items():
                    tallies[name, variant, thr].add(shown, truth, ignore)
    aps = {(name, v): coco_ap(gt, results[v])["segm"] for name, gt in gts.items() for v in VARIANTS}
    return len(first["images"]), tallies, aps


def run_semantic(segmenter, dedup: MaskDedup, root: Path, groups: list[str], thr: float, limit: int | None):
    """Per (group, variant) union-mask IoU and exact counts on a semantic-mask dataset."""
    _, samples, _ = discover(root)
    tallies = {(g, v): SemanticTally() for g in groups for v in VARIANTS}
    for group in groups:
        for sample in [s for s in samples if s.group == group][:limit]:
            rgb = load_image_rgb(root / sample.image)
            truth = binarize_mask(load_mask(root / sample.label))
            if truth.shape != rgb.shape[:2]:
                print(f"skipped {sample.image}: mask {truth.shape} vs photo {rgb.shape[:2]}", file=sys.stderr)
                continue
            true_count = len(mask_to_instances(truth, DEFAULT_MIN_AREA))
            detections, to_photo = segmenter.detect(rgb)
            for variant, option in zip(VARIANTS, (None, dedup)):
                tallies[group, variant].add(to_photo(shown_nails(detections, thr, option)), truth, true_count)
    return tallies


def _row(label: str, cells: list[str]) -> str:
    return f"{label:40s}" + "".join(f"{c:>24s}" for c in cells)


def print_coco(name: str, photos: int, tallies: dict, aps: dict, thr: float, thresholds: list[float]) -> None:
    print(f"\n{name}: {photos} photos, score >= {thr}")
    print(_row("", list(VARIANTS)))
    t = [tallies[v, thr] for v in VARIANTS]
    print(_row("nails reported / there", [f"{x.reported:,} / {x.there:,}" for x in t]))
    print(_row("duplicate pairs (photos with any)", [f"{x.pairs} ({x.photos_with_pairs})" for x in t]))
    print(_row("photos with exactly the right count", [f"{x.exact_share:.1%}" for x in t]))
    print(_row("precision / recall / F1 (IoU >= 0.5)", [f"{x.precision:.3f} / {x.recall:.3f} / {x.f1:.3f}" for x in t]))
    print(
        _row(
            "segm AP / AP50 / AP75 (no threshold)",
            [f"{a['AP']:.3f} / {a['AP50']:.3f} / {a['AP75']:.3f}" for a in aps.values()],
        )
    )
    for variant in VARIANTS:
        print(f"\nsweep, {variant}:")
        print(f"{'thr':>5s} {'reported':>9s} {'pairs':>6s} {'photos':>7s} {'exact':>7s} {'P':>6s} {'R':>6s} {'F1':>6s}")
        for x, k in ((tallies[variant, k], k) for k in thresholds):
            print(
                f"{k:5.2f} {x.reported:9d} {x.pairs:6d} {x.photos_with_pairs:7d} {x.exact_share:7.1%} "
                f"{x.precision:6.3f} {x.recall:6.3f} {x.f1:6.3f}"
            )
        best = choose_threshold({k: tallies[variant, k] for k in thresholds})
        print(
            f"best F1 ({variant}): score >= {best} (F1 {tallies[variant, best].f1:.3f}, "
            f"exact count {tallies[variant, best].exact_share:.1%})"
        )
    print(f"record it as the model's default: nailseg export CHECKPOINT --out WEIGHTS --score-thr {best}")


def print_semantic(tallies: dict, groups: list[str], thr: float) -> None:
    print(f"\nnails-semantic, score >= {thr}; true count = 8-connected regions of >= {DEFAULT_MIN_AREA} px")
    print(f"{'group':>5s} {'photos':>6s} " + " ".join(f"{'IoU ' + v:>16s} {'exact ' + v:>16s}" for v in VARIANTS))
    for g in groups:
        cells = []
        for v in VARIANTS:
            x = tallies[g, v]
            cells.append(f"{x.iou_sum / max(x.photos, 1):16.3f} {x.exact / max(x.photos, 1):16.1%}")
        print(f"{g:>5s} {tallies[g, VARIANTS[0]].photos:6d} " + " ".join(cells))
    print("\nedges (dedup): predicted / true area; mean IoU were every pixel within 1 px of the outline right")
    print(f"{'group':>5s} {'area':>6s} {'IoU':>6s}")
    for g in groups:
        x = tallies[g, "dedup"]
        area = x.predicted_px / max(x.true_px, 1)
        print(f"{g:>5s} {area:6.3f} {x.edge_fixed_iou_sum / max(x.photos, 1):6.3f}")


def _ratio(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann-file", type=Path, help="COCO ground truth, e.g. data/roboflow/valid.json")
    parser.add_argument("--img-dir", type=Path, help="folder the file_name entries are relative to")
    parser.add_argument("--semantic", type=Path, default=None, help="nails-semantic root (Images/, Masks/)")
    parser.add_argument("--groups", nargs="+", default=["1", "2", "3"], help="nails-semantic groups")
    parser.add_argument(
        "--score-thr", type=float, default=None, help="threshold of the main tables (default: the model's own)"
    )
    parser.add_argument("--sweep", type=float, nargs="+", default=list(SWEEP), help="thresholds to sweep")
    parser.add_argument("--weights", default=None, help="weights spec (default: $NAILSEG_WEIGHTS, then bundled)")
    # Overrides of the config's mask_dedup, to compare rules; absent unless given.
    parser.add_argument("--iou-thr", type=float, default=argparse.SUPPRESS, help="mask_dedup iou_thr")
    parser.add_argument("--cover-thr", type=float, default=argparse.SUPPRESS, help="mask_dedup cover_thr")
    parser.add_argument(
        "--span-score-ratio",
        type=_ratio,
        default=argparse.SUPPRESS,
        help="mask_dedup span_score_ratio ('none': the score order alone)",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N photos of each set (quick look)")
    parser.add_argument(
        "--label-fixes",
        type=Path,
        default=None,
        help="checked label errors of --ann-file (bench/label_fixes/*.csv): the figures again, with them as crowd",
    )
    args = parser.parse_args(argv)
    if (args.ann_file is None) != (args.img_dir is None):
        parser.error("--ann-file and --img-dir go together")

    start = time.perf_counter()
    segmenter = load_model(args.weights, device="cpu")
    overrides = {k: v for k, v in vars(args).items() if k in ("iou_thr", "cover_thr", "span_score_ratio")}
    dedup = dataclasses.replace(segmenter.dedup or MaskDedup(), **overrides)
    if args.score_thr is None:
        args.score_thr = segmenter.score_thr
    print(f"weights: {segmenter.weights.source}; dedup: {dedup}; the model's default threshold: {segmenter.score_thr}")
    if args.ann_file:
        thresholds = sorted({*args.sweep, args.score_thr})
        gt = load_coco(args.ann_file)
        gt = {**gt, "images": gt["images"][: args.limit]}
        gts = {"as labelled": gt}
        if args.label_fixes:
            gts[f"labels fixed ({args.label_fixes})"] = apply_label_fixes(gt, args.label_fixes)
        photos, tallies, aps = run_coco(segmenter, dedup, gts, args.img_dir, thresholds)
        for name in gts:
            t = {(v, k): tallies[name, v, k] for v in VARIANTS for k in thresholds}
            a = {v: aps[name, v] for v in VARIANTS}
            print_coco(f"{args.ann_file}, {name}", photos, t, a, args.score_thr, thresholds)
    if args.semantic:
        tallies = run_semantic(segmenter, dedup, args.semantic, args.groups, args.score_thr, args.limit)
        print_semantic(tallies, args.groups, args.score_thr)
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
