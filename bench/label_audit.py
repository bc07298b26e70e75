"""Look at what the model and the labels disagree on, one nail at a time, to find wrong labels.

On a COCO ground truth (e.g. ``data/roboflow/valid.json``) at the model's default threshold (or
``--score-thr``), as ``predict`` shows the nails: every shown nail that matches no label (a
"false nail", one-to-one at mask IoU >= 0.5, as ``bench/user_view.py`` counts) and every label
that no shown nail matches (a "missed nail"). Written to ``--out``:

* ``false_nails.csv`` and ``missed_nails.csv``: one row per nail (``id``, photo, box, score or
  area, the best mask IoU with the other side);
* ``false-NN.png`` and ``missed-NN.png``: contact sheets of 24 tiles, each the nail's
  neighbourhood (twice its box, at least 64 px) with the shown nail outlined in red, the labels
  in green, the nail in question filled lightly, and its id and score below.

Each tile is for a person to look at. A false nail that is a real nail without a label goes into
``bench/label_fixes/<split>.csv`` as ``unlabelled nail`` (its box from ``false_nails.csv``); a
label on something that is not a nail as ``not a nail``, and a label whose outline is not the
nail's (cut in two, shifted, half the nail) as ``bad outline`` (the label's box, from
``missed_nails.csv``). Only what was looked at goes in, with a note; ``bench/user_view.py
--label-fixes`` then reports the figures both ways.

Usage::

    PYTHONPATH=. .venv/bin/python bench/label_audit.py --ann-file data/roboflow/valid.json \\
        --img-dir ../shared/data/nails-roboflow --out /tmp/audit
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import cv2
import numpy as np

from nailseg.datasets import load_coco
from nailseg.dedup import mask_iou, shown_nails
from nailseg.evaluate import detect_photos, match_masks
from nailseg.inference import load_model

TILE = 192  # px, a tile's side
COLUMNS, ROWS = 6, 4
RED, GREEN = (230, 40, 40), (40, 220, 80)


@dataclasses.dataclass
class Case:
    """One nail the model and the labels disagree on."""

    id: str
    file_name: str
    box: tuple[float, float, float, float]
    score: float  # the shown nail's; 1 for a label
    best_iou: float  # with the other side's masks
    tile: np.ndarray


def tile(rgb: np.ndarray, mask: np.ndarray, shown: np.ndarray, labels: np.ndarray, caption: str) -> np.ndarray:
    """The nail's neighbourhood with the shown nails (red) and labels (green) outlined, the nail
    itself tinted, scaled to ``TILE`` and captioned."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return np.zeros((TILE + 18, TILE, 3), np.uint8)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = max(32, ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    y0, x0 = int(max(0, cy - half)), int(max(0, cx - half))
    y1, x1 = int(min(rgb.shape[0], cy + half)), int(min(rgb.shape[1], cx + half))
    view = rgb.copy()
    view[mask] = (0.6 * view[mask] + 0.4 * np.array([255, 220, 0])).astype(np.uint8)
    for masks, colour in ((labels, GREEN), (shown, RED)):
        for m in masks:
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(view, contours, -1, colour, 1)
    crop = view[y0:y1, x0:x1]
    scale = TILE / max(crop.shape[:2])
    crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))))
    out = np.zeros((TILE + 18, TILE, 3), np.uint8)
    out[: crop.shape[0], : crop.shape[1]] = crop
    cv2.putText(out, caption, (3, TILE + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def sheets(cases: list[Case], out: Path, prefix: str) -> list[Path]:
    """Contact sheets of ``COLUMNS x ROWS`` tiles, written as ``<prefix>-NN.png``."""
    paths = []
    per_sheet = COLUMNS * ROWS
    for k in range(0, len(cases), per_sheet):
        tiles = [c.tile for c in cases[k : k + per_sheet]]
        tiles += [np.zeros_like(tiles[0])] * (per_sheet - len(tiles))
        rows = [np.concatenate(tiles[r * COLUMNS : (r + 1) * COLUMNS], axis=1) for r in range(ROWS)]
        path = out / f"{prefix}-{k // per_sheet + 1:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def audit(segmenter, gt: dict, img_dir: Path, score_thr: float) -> tuple[list[Case], list[Case]]:
    """The false and the missed nails of every photo of ``gt`` at ``score_thr``."""
    false, missed = [], []
    for photo in detect_photos(segmenter, gt, img_dir):
        shown = photo.to_photo(shown_nails(photo.detections, score_thr, segmenter.dedup))
        truth = photo.truth
        pairs = match_masks(shown.masks, truth.masks)
        iou = mask_iou(shown.masks, truth.masks) if len(shown) and len(truth) else np.zeros((len(shown), len(truth)))
        rgb, name = photo.rgb, photo.image["file_name"]
        for k in sorted(set(range(len(shown))) - set(pairs[:, 0].tolist())):
            case_id = f"F{len(false) + 1}"
            best = float(iou[k].max()) if iou.shape[1] else 0.0
            art = tile(rgb, shown.masks[k], shown.masks, truth.masks, f"{case_id} {shown.scores[k]:.2f}")
            false.append(Case(case_id, name, tuple(map(float, shown.boxes_xyxy[k])), float(shown.scores[k]), best, art))
        for k in sorted(set(range(len(truth))) - set(pairs[:, 1].tolist())):
            case_id = f"M{len(missed) + 1}"
            best = float(iou[:, k].max()) if iou.shape[0] else 0.0
            art = tile(rgb, truth.masks[k], shown.masks, truth.masks, f"{case_id} {int(truth.masks[k].sum())}px")
            missed.append(Case(case_id, name, tuple(map(float, truth.boxes_xyxy[k])), 1.0, best, art))
    return false, missed


def write_csv(cases: list[Case], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "file_name", "x0", "y0", "x1", "y1", "score", "best_iou"])
        for c in cases:
            writer.writerow([c.id, c.file_name, *(f"{v:.1f}" for v in c.box), f"{c.score:.3f}", f"{c.best_iou:.3f}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann-file", type=Path, required=True, help="COCO ground truth, e.g. data/roboflow/valid.json")
    parser.add_argument("--img-dir", type=Path, required=True, help="folder the file_name entries are relative to")
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files and contact sheets")
    parser.add_argument("--weights", default=None, help="weights spec (default: $NAILSEG_WEIGHTS, then bundled)")
    parser.add_argument("--score-thr", type=float, default=None, help="default: the model's own")
    parser.add_argument("--limit", type=int, default=None, help="first N photos (quick look)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    segmenter = load_model(args.weights, device="cpu")
    score_thr = segmenter.score_thr if args.score_thr is None else args.score_thr
    gt = load_coco(args.ann_file)
    gt = {**gt, "images": gt["images"][: args.limit]}
    false, missed = audit(segmenter, gt, args.img_dir, score_thr)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(false, args.out / "false_nails.csv")
    write_csv(missed, args.out / "missed_nails.csv")
    written = sheets(false, args.out, "false") + sheets(missed, args.out, "missed")
    print(
        f"{len(gt['images'])} photos, score >= {score_thr}: {len(false)} false nails, {len(missed)} missed; "
        f"{len(written)} contact sheets in {args.out} ({time.perf_counter() - start:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
