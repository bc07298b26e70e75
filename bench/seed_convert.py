"""The seed tutorial's mask -> COCO algorithm, written out as a script for benchmarks.

Faithful to the tutorial, flaws included (this is the baseline NailSeg is measured against):

* a pandas manifest (``images, masks, width, height``) built by decoding every photo for its size;
* one pass with ``DataFrame.iterrows``; each mask read as grayscale and thresholded at 100;
* ``cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)``: one polygon per outer contour, holes lost;
* polygon = contour vertices + 0.5, ``bbox`` from the vertices, ``area`` = box area (not pixels);
  contours whose box area is under 20 px are dropped;
* ``json.dump(..., indent=4)`` of ``train.json`` and ``valid.json`` (an 80/20 random split).

Usage::

    python bench/seed_convert.py ROOT --out DIR      # ROOT/Images/<group>/*, ROOT/Masks/<group>/*
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

MIN_BOX_AREA = 20
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp"}


def make_manifest(root: Path) -> pd.DataFrame:
    """One row per photo with a mask of the same stem: ``images, masks, width, height`` (paths relative)."""
    masks = {(p.parent.name, p.stem): p for p in (root / "Masks").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS}
    rows = {"images": [], "masks": [], "width": [], "height": []}
    for image in sorted((root / "Images").rglob("*")):
        mask = masks.get((image.parent.name, image.stem))
        if image.suffix.lower() not in IMAGE_EXTENSIONS or mask is None:
            continue
        height, width = cv2.imread(str(image)).shape[:2]  # the tutorial decodes the photo for its size
        rows["images"].append(image.relative_to(root).as_posix())
        rows["masks"].append(mask.relative_to(root).as_posix())
        rows["width"].append(width)
        rows["height"].append(height)
    return pd.DataFrame(rows)


def find_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of a grayscale mask thresholded at 100, ``(K, 1, 2)`` int xy each."""
    _, binary = cv2.threshold(mask.astype(np.uint8), 100, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return contours


def get_annotations(root: Path, frame: pd.DataFrame) -> dict:
    """COCO dict of the rows of ``frame``, exactly as the tutorial computes it."""
    images, annotations = [], []
    for idx, row in frame.iterrows():
        images.append({"id": int(idx), "file_name": row.images, "width": int(row.width), "height": int(row.height)})
        mask = cv2.imread(os.path.join(str(root), row.masks), cv2.IMREAD_GRAYSCALE)
        for contour in find_contours(mask):
            xmin, xmax = int(np.min(contour[:, :, 0])), int(np.max(contour[:, :, 0]))
            ymin, ymax = int(np.min(contour[:, :, 1])), int(np.max(contour[:, :, 1]))
            if (xmax - xmin) * (ymax - ymin) < MIN_BOX_AREA:
                continue
            annotations.append(
                {
                    "image_id": int(idx),
                    "id": len(annotations),
                    "category_id": 1,
                    "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                    "area": (xmax - xmin) * (ymax - ymin),
                    "segmentation": [[x + 0.5 for x in contour.flatten().tolist()]],
                    "iscrowd": 0,
                }
            )
    return {"categories": [{"id": 1, "name": "nail"}], "images": images, "annotations": annotations}


def main(argv: list[str] | None = None) -> int:
    """Convert ``ROOT`` into ``DIR/train.json`` and ``DIR/valid.json`` (and ``DIR/manifest.csv``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="semantic dataset (Images/ + Masks/)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--valid-fraction", type=float, default=0.2, help="share of photos in valid.json")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    manifest = make_manifest(args.root)
    manifest.to_csv(args.out / "manifest.csv", index=False)
    valid = manifest.sample(frac=args.valid_fraction, random_state=0)
    train = manifest.drop(valid.index)
    for name, frame in (("train", train), ("valid", valid)):
        with open(args.out / f"{name}.json", "w", encoding="utf-8") as f:
            json.dump(get_annotations(args.root, frame), f, ensure_ascii=True, indent=4)
    print(f"{len(manifest)} photos, out: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
