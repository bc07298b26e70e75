"""COCO instances datasets from labelling tools: their JSON files, the photos those name, the nails.

Read as each tool documents its export:

* CVAT, "COCO 1.0": ``annotations/instances_<subset>.json`` + ``images/<subset>/`` (older
  versions: ``images/``);
* Roboflow, "COCO Segmentation": ``train/ valid/ test/``, each with ``_annotations.coco.json``
  beside its photos;
* plain: ``annotations.json`` beside the photos (``nailseg predict``'s pre-labels), or Label
  Studio's COCO export, ``result.json`` with its ``images/``.

A ``file_name`` is looked for beside its JSON file, then (CVAT) in ``images/<subset>/`` and
``images/`` beside ``annotations/``, then by its name alone among the photos under the root; never
outside the root. A photo's group (for the split) is its file's subset (CVAT's
``instances_<subset>``) or folder (Roboflow's split).

Categories: those chosen by name (``nailseg convert --category``, any case), else those whose
name means nail (:func:`nailseg.convert.means_nail`), else the only one a file uses; all become
``nail``. A file whose used categories leave nothing to keep is a listed problem, never photos
without nails. A crowd region (``iscrowd`` 1) stays one, as COCO defines it: not a nail to learn
(mmdet keeps it out of the training targets) nor one to find (COCOeval counts no detection on it).
CVAT writes every mask drawn with its brush as such a region unless its label has an
``is_crowd`` attribute set to false.

Shapes and numbers are checked where they are parsed (:mod:`nailseg.json_files`,
:mod:`nailseg.convert`); what is wrong with a photo's labels (a photo missing or of another size,
a polygon outside it or crossing itself, a box without a mask, a mask without a pixel) is that
photo's listed problem, and the rest converts. No torch, no mmdet here.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from nailseg.convert import (
    MAX_NAILS,
    instance_to_annotation,
    means_nail,
    polygon_crossing,
    segmentation_to_mask,
)
from nailseg.json_files import check_coco_header, check_id, check_segmentation, read_json

COCO_FILE_NAMES = frozenset({"annotations.json", "_annotations.coco.json", "result.json"})  # and instances_*.json
MAX_COCO_BYTES = 256 * 2**20  # COCO 2017's own train file is 450 MB; a nail data set's, a few MB
Problem = tuple[str, str]  # (file, what is wrong), as datasets.discover lists them


@dataclass(frozen=True)
class CocoNail:
    """One annotation of a kept category: where it is in its file, and its mask as COCO wrote it."""

    index: int
    category: str
    iscrowd: int
    segmentation: list | dict


@dataclass(frozen=True)
class CocoLabel:
    """What one COCO file says of one photo: its size, its nails, the categories left out."""

    file: str  # the JSON file, relative to the dataset root
    width: int
    height: int
    nails: tuple[CocoNail, ...]
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class CocoPhoto:
    """A photo found for a COCO image entry: its path relative to the root, its group, its label."""

    image: str
    group: str
    label: CocoLabel


def find_coco_files(root: Path) -> list[Path]:
    """The COCO files under ``root`` by the names the tools give them (see the module's docstring)."""
    return sorted(
        path
        for path in root.rglob("*.json")
        if path.is_file() and (path.name in COCO_FILE_NAMES or path.name.startswith("instances_"))
    )


def read_coco_dataset(
    root: Path, files: list[Path], photos: list[Path], categories: tuple[str, ...] = ()
) -> tuple[list[CocoPhoto], list[Problem]]:
    """The photos the COCO ``files`` label, each with its nails, and what is wrong, by file.

    Args:
        root: the dataset folder; ``files`` and ``photos`` lie under it.
        photos: every photo file under ``root`` (the ones no file names are listed as problems).
        categories: the category names to keep (any case); empty: see the module's docstring.

    Raises:
        ValueError: a name in ``categories`` that no file has.
    """
    problems: list[Problem] = []
    headers = []
    for path in files:
        name = path.relative_to(root).as_posix()
        try:
            data = read_json(path, name, MAX_COCO_BYTES)
            headers.append((path, name, data, *check_coco_header(data, name)))
        except ValueError as err:
            problems.append((name, str(err)))
    chosen = _chosen(categories, [names for *_, names in headers])
    by_name: dict[str, list[Path]] = {}
    for photo in photos:
        by_name.setdefault(photo.name, []).append(photo)
    claims: dict[str, list[tuple[str, CocoLabel | None]]] = {}
    for path, name, data, sizes, names in headers:
        try:
            kept = _kept_categories(data["annotations"], names, chosen)
        except ValueError as err:
            problems.append((name, str(err)))
            continue
        for photo, label, problem in _file_photos(root, path, name, data, sizes, names, kept, by_name):
            if photo is None:
                problems.append(problem)
                continue
            claims.setdefault(photo, []).append((name, label))
            if problem:
                problems.append(problem)
    unlabelled = (p for p in (photo.relative_to(root).as_posix() for photo in photos) if p not in claims)
    found = _labelled_once(claims, problems)
    return found, problems + [(p, "photo without a label") for p in unlabelled]


def _labelled_once(claims: dict[str, list[tuple[str, CocoLabel | None]]], problems: list[Problem]) -> list[CocoPhoto]:
    """The photos one image entry names with a usable label; those several entries name are added
    to ``problems`` (which label would be right cannot be told)."""
    found = []
    for photo, labels in claims.items():
        if len(labels) > 1:
            problems.append((photo, f"named by several COCO entries ({', '.join(file for file, _ in labels)})"))
        elif labels[0][1] is not None:
            found.append(CocoPhoto(photo, _group(labels[0][0]), labels[0][1]))
    return found


def _chosen(categories: tuple[str, ...], names_per_file: list[dict[int, str]]) -> set[str]:
    """The chosen category names, lower case; each must be one that some file has."""
    chosen = {c.strip().lower() for c in categories if c.strip()}
    known = {n.lower(): n for names in names_per_file for n in names.values()}
    if missing := sorted(chosen - known.keys()):
        raise ValueError(
            f"no category named {', '.join(missing)} in the COCO files (theirs: {', '.join(sorted(known.values()))})"
        )
    return chosen


def _kept_categories(annotations: list[dict], names: dict[int, str], chosen: set[str]) -> set[int]:
    """The ids of a file's categories whose annotations are nails (see the module's docstring).

    Raises:
        ValueError: the file uses categories, and none of them would be kept.
    """
    used = {a.get("category_id") for a in annotations if type(a.get("category_id")) is int} & names.keys()
    if chosen:
        kept = {i for i in used if names[i].lower() in chosen}
    else:
        kept = {i for i in used if means_nail(names[i])} or (used if len(used) == 1 else set())
    if used and not kept:
        listed = ", ".join(sorted(names[i] for i in used))
        if chosen:
            raise ValueError(f"none of its categories ({listed}) is among those chosen")
        raise ValueError(
            f"its categories ({listed}): none says nail; choose with `nailseg convert --category NAME`, "
            "or name the category nail in the labelling tool"
        )
    return kept


def _file_photos(root: Path, path: Path, name: str, data: dict, sizes: dict, names: dict, kept: set, by_name: dict):
    """For each image entry of one file: ``(photo, label, problem)``.

    ``photo`` (relative to the root) is None when it is not found; ``label`` is None when its
    annotations have a problem; ``problem`` is None when there is none.
    """
    per_image: dict[int, list[tuple[int, dict]]] = {}
    for k, ann in enumerate(data["annotations"]):
        try:
            image_id = check_id(ann, "image_id", sizes, name, f"annotations[{k}]", "the id of an image")
        except ValueError as err:
            yield None, None, (name, str(err))
            continue
        per_image.setdefault(image_id, []).append((k, ann))
    for image in data["images"]:
        photo = _photo_path(root, path, image["file_name"], by_name)
        if not isinstance(photo, Path):
            yield None, None, (image["file_name"][:300], f"{photo or 'not found'} (named in {name})")
            continue
        photo = photo.relative_to(root).as_posix()
        try:
            yield photo, _label(name, image, per_image.get(image["id"], []), names, kept), None
        except ValueError as err:
            yield photo, None, (photo, str(err))


def _photo_path(root: Path, path: Path, file_name: str, by_name: dict[str, list[Path]]) -> Path | str | None:
    """The photo an image entry of the COCO file at ``path`` names, never outside ``root``.

    Returns:
        Its path; None when there is none; a message when several photos have its name.
    """
    written = file_name.replace("\\", "/")
    rel = PurePosixPath(written)
    folder = path.parent
    candidates = []
    if not (rel.is_absolute() or ".." in rel.parts or re.match(r"[A-Za-z]:", written)):
        candidates.append(folder / rel)
        if folder.name == "annotations":  # CVAT: images/<subset>/ (images/ in older versions)
            subset = path.stem.removeprefix("instances_")
            candidates += [folder.parent / "images" / subset / rel, folder.parent / "images" / rel]
    for candidate in candidates:
        with contextlib.suppress(OSError):  # a name too long for the file system is no photo either
            if candidate.is_file():
                return candidate
    same = by_name.get(rel.name, [])
    if len(same) > 1:
        return f"not found where named, and {len(same)} photos have its name"
    return same[0] if same else None


def _label(name: str, image: dict, annotations: list[tuple[int, dict]], names: dict, kept: set) -> CocoLabel:
    """One photo's label from its image entry and annotations (category, crowd flag, mask checked).

    Raises:
        ValueError: the first thing wrong with its annotations, naming the file and the place.
    """
    height, width = image["height"], image["width"]
    nails, left_out = [], []
    for k, ann in annotations:
        where = f"annotations[{k}]"
        category = check_id(ann, "category_id", names, name, where, "a category's id")
        if category not in kept:
            left_out.append(names[category])
            continue
        nails.append(_nail(ann, name, where, k, names[category], height, width))
    if len(nails) > MAX_NAILS:
        raise ValueError(f"{name}: more than {MAX_NAILS} annotations for one photo")
    return CocoLabel(name, width, height, tuple(nails), tuple(left_out))


def _nail(ann: dict, name: str, where: str, index: int, category: str, height: int, width: int) -> CocoNail:
    """One annotation of a kept category, checked: ``iscrowd`` 0 or 1 (absent: 0), and a mask within the photo."""
    iscrowd = check_id({"iscrowd": 0, **ann}, "iscrowd", (0, 1), name, where, "0 or 1")
    segmentation = ann.get("segmentation")
    if segmentation in (None, {}) or (isinstance(segmentation, list) and all(p == [] for p in segmentation)):
        raise ValueError(f"{name}: {where} is a box without a mask")
    check_segmentation(segmentation, name, f"{where}.segmentation", height, width)
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if point := polygon_crossing(polygon):
                x, y = point
                raise ValueError(f"{name}: {where}.segmentation: the polygon crosses itself at ({x:.1f}, {y:.1f})")
    return CocoNail(index, category, iscrowd, segmentation)


def _group(name: str) -> str:
    """A COCO file's group: CVAT's subset (``instances_<subset>.json``), else its folder (Roboflow's split)."""
    path = PurePosixPath(name)
    if path.stem.startswith("instances_"):
        return path.stem.removeprefix("instances_")
    return "default" if path.parent.as_posix() == "." else path.parent.as_posix()


def photo_annotations(label: CocoLabel, width: int, height: int, min_area: int) -> list[dict]:
    """COCO annotations of one photo as ``nailseg convert`` writes them (polygon where one holds the
    nail exactly, else RLE), from its label; crowd regions stay crowd regions.

    Args:
        width, height: the photo's own size (after EXIF rotation), as read from its header.
        min_area: nails with fewer pixels are dropped, as in the other layouts.

    Raises:
        ValueError: the photo's size is not the label's, or a mask covers no pixel.
    """
    if (width, height) != (label.width, label.height):
        turned = (height, width) == (label.width, label.height)
        hint = " (the other way round: labelled without the turn its EXIF orientation asks for?)" if turned else ""
        raise ValueError(f"size mismatch: photo {width}x{height}, {label.file} says {label.width}x{label.height}{hint}")
    annotations = []
    for nail in label.nails:
        mask = segmentation_to_mask(nail.segmentation, height, width)
        area = np.count_nonzero(mask)
        if not area:
            raise ValueError(f"{label.file}: annotations[{nail.index}]: its mask covers no pixel")
        if area >= min_area:
            annotations.append({**instance_to_annotation(mask), "iscrowd": nail.iscrowd})
    return annotations


def category_counts(labels: list[CocoLabel]) -> dict[str, dict[str, int]]:
    """How many annotations of each category the ``labels`` kept as nails and left out."""
    kept = Counter(nail.category for label in labels for nail in label.nails)
    left_out = Counter(category for label in labels for category in label.left_out)
    return {"kept": dict(sorted(kept.items())), "left_out": dict(sorted(left_out.items()))}
