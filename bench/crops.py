"""Classifier-ready crops, measured: ``nailseg predict PHOTOS --out DIR --crop-size S --align`` as a
user runs it, then every crop's size, whether the elongated cut-outs stand upright, and whether
``crops.csv`` lists every nail of ``predictions.json`` in order.

    python bench/crops.py --ann-file data/roboflow/valid.json     # our validation photos
    python bench/crops.py --photos examples                       # any photos or folders

A cut-out is elongated when its mask's axes (second moments) differ by >= 1.2x; it stands upright
when its long axis is within 10 degrees of vertical. ``check_crops`` is also what
``tests/test_model.py`` asserts on.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ELONGATED = 1.2  # long axis / short axis
UPRIGHT_DEG = 10.0


def long_axis_from_vertical(alpha: np.ndarray) -> tuple[float, float]:
    """(axes ratio, degrees between the mask's long axis and the vertical) of an alpha channel."""
    m = cv2.moments((alpha > 0).astype(np.uint8), binaryImage=True)
    mean, spread = (m["mu20"] + m["mu02"]) / 2, np.hypot((m["mu20"] - m["mu02"]) / 2, m["mu11"])
    ratio = float(np.sqrt((mean + spread) / max(mean - spread, 1e-9)))
    angle = abs(abs(0.5 * np.degrees(np.arctan2(2 * m["mu11"], m["mu20"] - m["mu02"]))) - 90)
    return ratio, float(angle)


def check_crops(out: Path, size: int) -> dict:
    """What a classifier's loader would meet in ``out`` (a ``nailseg predict --crop-size --align`` folder)."""
    results = json.loads((out / "predictions.json").read_text())
    with open(out / "crops.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected, per_photo = [], {}
    for result in results:  # nails numbered from 1 within each photo, in the same order
        per_photo[result["file_name"]] = per_photo.get(result["file_name"], 0) + 1
        expected.append((result["file_name"], per_photo[result["file_name"]]))
    wrong_size = elongated = upright = tip_up = 0
    for row in rows:
        box, cutout = (np.asarray(Image.open(out / row[column])) for column in ("crop", "cutout"))
        wrong_size += box.shape != (size, size, 3) or cutout.shape != (size, size, 4)
        ratio, angle = long_axis_from_vertical(cutout[..., 3])
        if ratio >= ELONGATED:
            elongated += 1
            upright += angle <= UPRIGHT_DEG
        tip_up += row["tip"] == "up"
    return dict(
        nails=len(results),
        rows=len(rows),
        rows_match_predictions=[(r["photo"], int(r["nail"])) for r in rows] == expected,
        wrong_size=wrong_size,
        elongated=elongated,
        upright=upright,
        upright_share=upright / elongated if elongated else float("nan"),
        tip_told=tip_up,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann-file", type=Path, help="COCO file whose photos to use (e.g. data/roboflow/valid.json)")
    parser.add_argument("--photos", type=Path, nargs="+", help="photos or folders instead")
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=None, help="keep the output here (default: a temporary folder)")
    args = parser.parse_args()
    if args.photos:
        photos = [str(p) for p in args.photos]
    elif args.ann_file:
        coco = json.loads(args.ann_file.read_text())
        root = Path(coco["info"]["dataset_root"])
        photos = [str(root / im["file_name"]) for im in coco["images"]]
    else:
        parser.error("give --ann-file or --photos")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "out"
        cmd = [sys.executable, "-m", "nailseg", "predict", *photos, "--out", str(out)]
        cmd += ["--crop-size", str(args.crop_size), "--align"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"nailseg predict failed:\n{done.stderr[-3000:]}")
        wall = time.perf_counter() - start
        r = check_crops(out, args.crop_size)
    print(f"nailseg predict --crop-size {args.crop_size} --align on {len(photos)} photos ({wall:.0f} s)")
    print(
        f"nails in predictions.json {r['nails']}, rows in crops.csv {r['rows']}, same nails in the same order: "
        f"{r['rows_match_predictions']}"
    )
    print(f"crops not {args.crop_size}x{args.crop_size}: {r['wrong_size']} (box crops and cut-outs)")
    print(
        f"elongated cut-outs (axes >= {ELONGATED}x) {r['elongated']}, long axis within {UPRIGHT_DEG:.0f} deg "
        f"of vertical {r['upright']} ({100 * r['upright_share']:.1f} %)"
    )
    print(f"tip side told (turned tip up) {r['tip_told']} of {r['rows']}; the others: tip unknown")


if __name__ == "__main__":
    main()
