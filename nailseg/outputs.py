"""Files written for segmented photos, by the CLI and the app alike (the edge of draw.py).

Per photo: ``<stem>_overlay.png``, ``crops/<stem>_<k>_box.png`` and ``_cutout.png`` (k from 1),
optionally ``masks/<stem>_<k>.png`` and ``masks/<stem>_all.png``. Per run: ``predictions.json``
(COCO results, one per nail, with the photo's ``file_name`` as the user named it) and
``crops.csv`` (one row per nail: :data:`CROP_COLUMNS`), for a classifier's dataset loader. While
``nailseg predict --nproc N`` runs, each worker keeps its share in ``.shards/rank-<r>.json``
(:func:`write_shard`), merged into those two files at the end (:mod:`nailseg.predict`).

Pre-labels for a labelling tool (:func:`write_labels`): ``annotations.json``, a COCO instances
file whose ``file_name`` entries name the photos as they lie beside it (what CVAT's and Label
Studio's COCO importers and ``nailseg convert`` expect), and optionally YOLO-seg label files,
``labels/<file_name>.txt``, as Ultralytics and Roboflow pair them with ``images/<file_name>``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from nailseg import convert, draw
from nailseg.files import safe_stem, write_atomic
from nailseg.json_files import check_results, check_shard, read_json
from nailseg.result import Nails

PREDICTIONS, CROPS_CSV, SHARDS = "predictions.json", "crops.csv", ".shards"
ANNOTATIONS, LABELS = "annotations.json", "labels"
CROP_COLUMNS = ["crop", "cutout", "photo", "nail", "score", "x0", "y0", "x1", "y1", "angle_deg", "tip", "area"]


@dataclass
class NailImages:
    """What one photo's nails look like as pictures: ``(H, W, 3)`` overlay, one crop per nail."""

    overlay: np.ndarray
    crops: list[draw.NailCrop]


@dataclass
class SavedPhoto:
    """Paths written for one photo (see :func:`save_photo`), and its rows of ``crops.csv``."""

    overlay: Path
    crops: list[Path] = field(default_factory=list)
    cutouts: list[Path] = field(default_factory=list)
    masks: list[Path] = field(default_factory=list)
    crop_rows: list[dict] = field(default_factory=list)


def render_nails(image_rgb: np.ndarray, nails: Nails, options: draw.CropOptions = draw.CropOptions()) -> NailImages:
    """Overlay, box crops and cut-outs of a photo's nails, each drawn once."""
    return NailImages(draw.overlay(image_rgb, nails), draw.crop_nails(image_rgb, nails, options))


def save_png(path: Path, image: np.ndarray) -> Path:
    """Write ``(H, W) grey``, ``(H, W, 3) RGB`` or ``(H, W, 4) RGBA`` uint8 as PNG."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path.name}")
    return path


def save_photo(
    out_dir: Path,
    stem: str,
    image_rgb: np.ndarray,
    nails: Nails,
    options: draw.CropOptions = draw.CropOptions(),
    masks: bool = False,
    images: NailImages | None = None,
    photo: str = "",
) -> SavedPhoto:
    """Write a photo's overlay, crops and cut-outs (and with ``masks`` its masks) under ``out_dir``.

    Args:
        images: the pictures when the caller already drew them (see :func:`render_nails`).
        photo: the photo's name as the user gave it, for ``crops.csv`` (default ``stem``).
    """
    out_dir = Path(out_dir)
    images = images or render_nails(image_rgb, nails, options)
    saved = SavedPhoto(save_png(out_dir / f"{stem}_overlay.png", images.overlay))
    records = nails.to_records()
    for k, (crop, record) in enumerate(zip(images.crops, records), start=1):
        saved.crops.append(save_png(out_dir / "crops" / f"{stem}_{k}_box.png", crop.box))
        saved.cutouts.append(save_png(out_dir / "crops" / f"{stem}_{k}_cutout.png", crop.cutout))
        x0, y0, x1, y1 = record["box_xyxy"]
        saved.crop_rows.append(
            {
                "crop": f"crops/{stem}_{k}_box.png",
                "cutout": f"crops/{stem}_{k}_cutout.png",
                "photo": photo or stem,
                "nail": k,
                "score": record["score"],
                "x0": x0,
                "y0": y0,
                "x1": x1,
                "y1": y1,
                "angle_deg": crop.angle_deg,
                "tip": crop.tip,
                "area": record["area"],
            }
        )
    if masks:
        for k, m in enumerate(nails.masks, start=1):
            saved.masks.append(save_png(out_dir / "masks" / f"{stem}_{k}.png", m.astype(np.uint8) * 255))
        saved.masks.append(save_png(out_dir / "masks" / f"{stem}_all.png", draw.combined_mask(nails)))
    return saved


def photo_results(nails: Nails, image_id: int, file_name: str) -> list[dict]:
    """COCO results of one photo's nails (RLE masks, xywh boxes) with its ``file_name`` added."""
    return [{**r, "file_name": file_name} for r in nails.to_coco_results(image_id)]


def write_predictions(out_dir: Path, results: list[dict]) -> Path:
    """Write ``out_dir/predictions.json`` (atomically): the COCO results of every photo."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return write_atomic(Path(out_dir) / PREDICTIONS, json.dumps(results))


def write_crops_csv(out_dir: Path, rows: list[dict]) -> Path:
    """Write ``out_dir/crops.csv`` (atomically): one row per nail crop, columns :data:`CROP_COLUMNS`.

    Crop paths are relative to ``out_dir``; boxes are ``xyxy`` in pixels of the photo as segmented.
    """
    text = io.StringIO()
    writer = csv.DictWriter(text, CROP_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return write_atomic(Path(out_dir) / CROPS_CSV, text.getvalue())


def read_predictions(out_dir: Path) -> list[dict]:
    """The results a run wrote to ``out_dir/predictions.json`` (empty when there is none).

    Raises:
        ValueError: the file is not a list of results as :func:`photo_results` makes them.
    """
    path = Path(out_dir) / PREDICTIONS
    return check_results(read_json(path), str(path)) if path.exists() else []


def read_crops_csv(out_dir: Path) -> list[dict]:
    """The rows a run wrote to ``out_dir/crops.csv``, values as the text written (empty when none)."""
    path = Path(out_dir) / CROPS_CSV
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_shard(out_dir: Path, rank: int, photos: list[dict]) -> Path:
    """Write worker ``rank``'s photos so far to ``out_dir/.shards/rank-<rank>.json`` (atomically).

    Args:
        photos: one dict per photo tried: ``name``, ``image_id``, ``results`` (its COCO results,
            as :func:`photo_results`), ``rows`` (its ``crops.csv`` rows) and ``failed`` (bool).
    """
    folder = Path(out_dir) / SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    return write_atomic(folder / f"rank-{rank}.json", json.dumps(photos))


def read_shards(out_dir: Path) -> list[dict]:
    """Every worker's photos (see :func:`write_shard`), in no particular order; empty when none."""
    paths = sorted((Path(out_dir) / SHARDS).glob("rank-*.json"))
    return [photo for path in paths for photo in check_shard(read_json(path), str(path))]


def remove_shards(out_dir: Path) -> None:
    """Delete the workers' files once merged (or stale)."""
    folder = Path(out_dir) / SHARDS
    for path in folder.glob("rank-*.json"):
        path.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


# --- pre-labels for a labelling tool -------------------------------------------------------------


@dataclass
class PhotoLabels:
    """One photo's pre-labels: its name in the COCO file, its size, an annotation and a YOLO line per nail."""

    file_name: str
    width: int
    height: int
    annotations: list[dict] = field(default_factory=list)
    yolo_lines: list[str] = field(default_factory=list)


def photo_labels(
    file_name: str, width: int, height: int, masks: Iterable[np.ndarray], scores: Iterable[float]
) -> PhotoLabels:
    """A photo's nails as pre-labels: each a COCO annotation (polygon where one holds the mask
    exactly, else RLE; its detection's ``score`` kept) and a YOLO-seg line (its outline).

    Args:
        file_name: the photo as the COCO file names it, relative to the folder the file goes beside.
        width, height: the photo's size.
        masks: ``(height, width) bool`` per nail, taken one at a time (a 50 MP photo's are 50 MB each).
        scores: the nails' scores, in ``[0, 1]``.
    """
    labels = PhotoLabels(file_name, width, height)
    for mask, score in zip(masks, scores):
        if not mask.any():  # a detection whose mask is empty labels nothing
            continue
        labels.annotations.append({**convert.instance_to_annotation(mask), "score": round(float(score), 5)})
        labels.yolo_lines.append(yolo_line(convert.outline_polygon(mask), width, height))
    return labels


def yolo_line(polygon_xy: np.ndarray, width: int, height: int) -> str:
    """One YOLO-seg label line: class 0, then the ``(K, 2)`` pixel polygon's points as fractions of
    the photo's width and height. Six decimals put a point at most 0.004 px off on an 8,000 px
    side; an outline's points lie 0.05 px from where pycocotools' rasteriser would round them
    otherwise, so the polygon still gives back exactly its pixels."""
    return "0 " + " ".join(f"{v:.6f}" for v in (polygon_xy / (width, height)).ravel())


def write_labels(out_dir: Path, photos: list[PhotoLabels], yolo: bool = False) -> list[Path]:
    """Write ``out_dir/annotations.json`` and, with ``yolo``, ``out_dir/labels/...``, each atomically.

    ``annotations.json`` is COCO instances: ``images`` (``file_name``, ``width``, ``height``) in
    the order given, ``annotations`` with their ``score``, ``categories`` ``[nail]``, ids from 1.
    """
    out_dir = Path(out_dir)
    images = [{"file_name": p.file_name, "width": p.width, "height": p.height} for p in photos]
    coco = convert.build_coco(images, [p.annotations for p in photos], {"description": "NailSeg pre-labels"})
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_atomic(out_dir / ANNOTATIONS, json.dumps(coco))]
    if yolo:
        for photo in photos:
            path = out_dir / label_file(photo.file_name)
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append(write_atomic(path, "".join(line + "\n" for line in photo.yolo_lines)))
    return written


def label_file(file_name: str) -> str:
    """Where a photo's YOLO label goes: ``labels/<file_name>.txt`` with the photo's suffix replaced.

    A name that could leave that folder (absolute, ``..``, empty parts) or that no file system
    holds (a NUL, a part over 200 bytes) becomes its safe stem: a visitor names uploads.
    """
    rel = PurePosixPath(file_name.replace("\\", "/"))
    parts_ok = all(part not in ("", ".", "..") and len(part.encode()) <= 200 for part in rel.parts)
    if rel.is_absolute() or not rel.parts or not parts_ok or "\0" in file_name:
        return f"{LABELS}/{safe_stem(file_name)}.txt"
    return f"{LABELS}/{rel.with_suffix('').as_posix()}.txt"
