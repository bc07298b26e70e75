"""Fidelity: do semantic masks converted back give the true nails? Recall and precision at IoU >= 0.9.

Each YOLO-seg nail of ``nails-roboflow`` is rendered with ``cv2.fillPoly`` (as a user painting
masks from outlines would) as the ground truth; all nails of a photo are merged
into one 0/255 mask, written as a semantic dataset (``Images/all/`` + ``Masks/all/``) in a temp
folder and converted back by (a) ``nailseg convert``, (b) ``nailseg convert --split-touching`` and
(c) the seed's algorithm (``bench/seed_convert.py``), each with everything in ``train.json``.
Converted nails are matched one-to-one to true nails by mask IoU (Hungarian). Also reported: how
many true nails touch another nail in the merged mask, which no connected-component cut can separate.

Usage::

    nice -n 19 .venv/bin/python bench/fidelity.py [ROOT] [--limit N] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO
from scipy.optimize import linear_sum_assignment

from nailseg.datasets import load_yolo_polygons
from nailseg.dedup import mask_iou
from nailseg.images import exif_size

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "nails-roboflow"
IOU = 0.9


def fill_polygons(polygons: list[np.ndarray], height: int, width: int) -> list[np.ndarray]:
    """One ``(H, W) bool`` mask per polygon, painted with ``cv2.fillPoly`` at integer vertices."""
    masks = []
    for poly in polygons:
        canvas = np.zeros((height, width), np.uint8)
        cv2.fillPoly(canvas, [np.round(poly).astype(np.int32).reshape(-1, 1, 2)], 1)
        masks.append(canvas.astype(bool))
    return masks


def build_semantic(root: Path, stems: list[str], dest: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Write ``dest/Images/all/<stem>.jpg`` (links) and ``dest/Masks/all/<stem>.png`` (0/255).

    Returns:
        ``(truth, touching)``: per stem, ``(N, H, W) bool`` true nails (empty renderings dropped)
        and ``(N,) bool`` whether each touches another nail in the merged mask.
    """
    (dest / "Images" / "all").mkdir(parents=True)
    (dest / "Masks" / "all").mkdir(parents=True)
    truth, touching = {}, {}
    for stem in stems:
        image = next((root / "images").glob(f"{stem}.*"))
        width, height = exif_size(image)
        polygons = load_yolo_polygons(root / "labels" / f"{stem}.txt", width, height)
        nails = [m for m in fill_polygons(polygons, height, width) if m.any()]
        masks = np.stack(nails) if nails else np.zeros((0, height, width), bool)
        merged = masks.any(axis=0)
        _, blobs = cv2.connectedComponents(merged.astype(np.uint8), connectivity=8)
        blob_of = [np.bincount(blobs[m]).argmax() for m in masks]
        touching[stem] = np.array([blob_of.count(b) > 1 for b in blob_of], bool)
        truth[stem] = masks
        (dest / "Images" / "all" / image.name).symlink_to(image.resolve())
        cv2.imwrite(str(dest / "Masks" / "all" / f"{stem}.png"), merged.astype(np.uint8) * 255)
    return truth, touching


def predicted_masks(coco_json: Path) -> dict[str, list[np.ndarray]]:
    """Per photo stem, the decoded masks of every annotation in a COCO json."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools chats on stdout
        coco = COCO(str(coco_json))
    return {
        Path(img["file_name"]).stem: [coco.annToMask(a).astype(bool) for a in coco.imgToAnns[img["id"]]]
        for img in coco.dataset["images"]
    }


def match(truth: np.ndarray, predicted: list[np.ndarray]) -> np.ndarray:
    """``(N,) bool``: which true nails are matched one-to-one to a prediction with IoU >= 0.9."""
    hit = np.zeros(len(truth), bool)
    if not len(truth) or not predicted:
        return hit
    iou = mask_iou(truth, np.stack(predicted))
    rows, cols = linear_sum_assignment(-iou)
    hit[rows[iou[rows, cols] >= IOU]] = True
    return hit


def main(argv: list[str] | None = None) -> int:
    """Print recall/precision per method and the number of touching nails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=DEFAULT_ROOT, help="YOLO-seg dataset (images/, labels/)")
    parser.add_argument("--limit", type=int, default=None, help="use a random subset of this many photos")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset")
    args = parser.parse_args(argv)

    stems = sorted(p.stem for p in (args.root / "labels").glob("*.txt"))
    if args.limit:
        pick = np.random.default_rng(args.seed).choice(len(stems), min(args.limit, len(stems)), replace=False)
        stems = [stems[i] for i in sorted(pick)]
    methods = {
        "ours (default)": [sys.executable, "-m", "nailseg", "convert"],
        "ours --split-touching": [sys.executable, "-m", "nailseg", "convert", "--split-touching"],
        "seed algorithm": [sys.executable, str(BENCH / "seed_convert.py")],
    }
    with tempfile.TemporaryDirectory(prefix="nailseg-fidelity-") as tmp:
        data = Path(tmp) / "semantic"
        truth, touching = build_semantic(args.root, stems, data)
        n_true = sum(len(t) for t in truth.values())
        n_touch = int(sum(t.sum() for t in touching.values()))
        print(
            f"{len(stems)} photos, {n_true} true nails; {n_touch} touch another nail in the merged mask "
            f"({n_touch / max(n_true, 1):.1%})"
        )
        print(f"{'method':24s} {'recall':>7s} {'precision':>9s} {'found':>6s} {'touching recall':>15s} {'time':>6s}")
        for name, command in methods.items():
            out = Path(tmp) / name.replace(" ", "_")
            start = time.perf_counter()
            subprocess.run(
                [*command, str(data), "--out", str(out), "--valid-fraction", "0"],
                cwd=REPO,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            seconds = time.perf_counter() - start
            predicted = predicted_masks(out / "train.json")
            hits = {s: match(truth[s], predicted.get(s, [])) for s in stems}
            matched = sum(int(h.sum()) for h in hits.values())
            found = sum(len(v) for v in predicted.values())
            touch_hit = sum(int(hits[s][touching[s]].sum()) for s in stems)
            print(
                f"{name:24s} {matched / max(n_true, 1):7.4f} {matched / max(found, 1):9.4f} {found:6d} "
                f"{touch_hit / max(n_touch, 1):15.4f} {seconds:5.1f}s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
