"""The JSON files NailSeg reads, parsed strictly and checked for their shape where they are read.

A COCO ground truth from a labelling tool, a ``predictions.json`` edited by hand or a config beside
downloaded weights reaches pycocotools, mmdet or our own loops only through here. Each check names
the file and the place in it (``valid.json: annotations[3].bbox must be ...``): a wrong file is one
line on the command line, not a ``KeyError`` deep in a library, and pycocotools (C code that
trusts its input) is never handed a number it would crash on.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections import Counter
from pathlib import Path

from nailseg.convert import MAX_NAILS, check_polygon, check_rle
from nailseg.images import MAX_PIXELS

_SHOW = reprlib.Repr()  # values in messages: short, whatever a file holds
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict, _SHOW.maxstring, _SHOW.maxother = 2, 4, 4, 40, 40


def read_json(path: str | Path, name: str | None = None, max_bytes: int | None = None):
    """Parse ``path`` as standard JSON.

    ``NaN``, ``Infinity`` and numbers that overflow a float are refused: they are not JSON, and
    every number NailSeg reads must be finite.

    Args:
        name: how messages call the file (default: ``path`` as given).
        max_bytes: refuse larger files before reading them.

    Raises:
        ValueError: not UTF-8 JSON, a non-finite number, nested too deeply, or too large.
        OSError: the file cannot be read (missing, a folder...).
    """
    path = Path(path)
    name = name or str(path)
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise ValueError(f"{name} is larger than {max_bytes // 1024} KiB")
    try:
        return json.loads(path.read_bytes(), parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"{name} is nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, a non-finite number
        raise ValueError(f"{name} is not standard JSON ({err})") from None


def _refuse_constant(word: str):
    raise ValueError(f"{word} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} overflows a float")
    return value


# --- small predicates ---------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_box(value) -> bool:
    """COCO's ``[x, y, w, h]``: four finite numbers, no negative size."""
    return isinstance(value, list) and len(value) == 4 and all(map(_is_number, value)) and min(value[2:]) >= 0


def _require(ok: bool, name: str, where: str, expected: str, value) -> None:
    if not ok:
        raise ValueError(f"{name}: {where} must be {expected}, got {_SHOW.repr(value)}")


def _objects(data: dict, key: str, name: str) -> list[dict]:
    items = data.get(key)
    _require(isinstance(items, list) and all(isinstance(i, dict) for i in items), name, key, "a list of objects", items)
    return items


def _top_object(data, name: str, what: str) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{name} is not {what} (expected a JSON object, got {_SHOW.repr(data)})")
    return data


# --- COCO instances (ground truth, train.json) --------------------------------------------------


def check_coco(data, name: str) -> dict:
    """``data`` if it is a COCO instances file that pycocotools, mmdet and NailSeg can all use.

    Checked: ``images`` and ``categories`` (see :func:`check_coco_header`), ``annotations`` (an
    image and category that exist; a finite ``bbox`` and ``area``; ``iscrowd`` 0 or 1; a
    segmentation of polygons within the photo or an RLE of exactly its size; at most ``MAX_NAILS``
    per photo).

    Raises:
        ValueError: the first thing that is wrong, with ``name`` and where it is.
    """
    sizes, categories = check_coco_header(data, name)
    nails = Counter()
    for k, ann in enumerate(_objects(data, "annotations", name)):
        where = f"annotations[{k}]"
        _check_annotation(ann, name, where, sizes, categories)
        nails[ann["image_id"]] += 1
        if nails[ann["image_id"]] > MAX_NAILS:
            raise ValueError(f"{name}: image {ann['image_id']} has more than {MAX_NAILS} annotations")
    return data


def check_coco_header(data, name: str) -> tuple[dict[int, tuple[int, int]], dict[int, str]]:
    """The photo sizes and category names of a COCO file, all checked but the annotations themselves.

    Checked: a JSON object; ``info``, if present, an object; ``images`` (integer ids, once each; a
    file name; a size within the photo limit); ``categories`` (integer ids, names); ``annotations``
    a list of objects.

    Returns:
        ``(sizes, categories)``: ``(height, width)`` by image id, and names by category id.

    Raises:
        ValueError: the first thing that is wrong, with ``name`` and where it is.
    """
    data = _top_object(data, name, "a COCO file")
    info = data.get("info", {})
    _require(isinstance(info, dict), name, "info", "an object", info)
    root = info.get("dataset_root", "")
    _require(isinstance(root, str), name, "info.dataset_root", "a folder name", root)
    sizes = {}
    for k, image in enumerate(_objects(data, "images", name)):
        image_id, size = _image_size(image, name, f"images[{k}]")
        _require(image_id not in sizes, name, f"images[{k}].id", "unique", image_id)
        sizes[image_id] = size
    categories = {}
    for k, category in enumerate(_objects(data, "categories", name)):
        _require(_is_int(category.get("id")), name, f"categories[{k}].id", "an integer", category.get("id"))
        _require(isinstance(category.get("name"), str), name, f"categories[{k}].name", "a string", category.get("name"))
        categories[category["id"]] = category["name"]
    _objects(data, "annotations", name)
    return sizes, categories


def _image_size(image: dict, name: str, where: str) -> tuple[int, tuple[int, int]]:
    """``(id, (height, width))`` of a COCO image entry, checked."""
    _require(_is_int(image.get("id")), name, f"{where}.id", "an integer", image.get("id"))
    file_name = image.get("file_name")
    _require(isinstance(file_name, str) and bool(file_name), name, f"{where}.file_name", "a file name", file_name)
    for key in ("width", "height"):
        _require(
            _is_int(image.get(key)) and image[key] >= 1, name, f"{where}.{key}", "a positive integer", image.get(key)
        )
    width, height = image["width"], image["height"]
    _require(width * height <= MAX_PIXELS, name, where, f"at most {MAX_PIXELS / 1e6:.0f} MP", f"{width}x{height}")
    return image["id"], (height, width)


def check_id(ann: dict, key: str, allowed, name: str, where: str, expected: str) -> int:
    """``ann[key]`` if it is an integer among ``allowed`` (checked as an integer first: ``true``
    would equal 1, and a list is unhashable).

    Raises:
        ValueError: ``{name}: {where}.{key} must be {expected}, got ...``.
    """
    value = ann.get(key)
    _require(_is_int(value) and value in allowed, name, f"{where}.{key}", expected, value)
    return value


def _check_annotation(ann: dict, name: str, where: str, sizes: dict, categories: dict) -> None:
    _require(_is_int(ann.get("id")), name, f"{where}.id", "an integer", ann.get("id"))
    image_id = check_id(ann, "image_id", sizes, name, where, "the id of an image")
    check_id(ann, "category_id", categories, name, where, "a category's id")
    check_id(ann, "iscrowd", (0, 1), name, where, "0 or 1")
    _require(_is_box(ann.get("bbox")), name, f"{where}.bbox", "[x, y, w, h] (finite, w, h >= 0)", ann.get("bbox"))
    area = ann.get("area")
    _require(_is_number(area) and area >= 0, name, f"{where}.area", "a finite number >= 0", area)
    check_segmentation(ann.get("segmentation"), name, f"{where}.segmentation", *sizes[image_id])


def check_segmentation(segmentation, name: str, where: str, height: int, width: int) -> None:
    """Refuse a COCO segmentation unless it is polygons within the ``height x width`` photo or an
    RLE of exactly its size (:func:`nailseg.convert.check_polygon`, :func:`~nailseg.convert.check_rle`).

    Raises:
        ValueError: naming ``name`` and ``where``.
    """
    polygons = isinstance(segmentation, list) and bool(segmentation)
    polygons = polygons and all(isinstance(p, list) and all(map(_is_number, p)) for p in segmentation)
    expected = "polygons or an RLE object"
    _require(polygons or isinstance(segmentation, dict), name, where, expected, segmentation)
    try:
        if polygons:
            for polygon in segmentation:
                check_polygon(polygon, height, width)
        else:
            check_rle(segmentation, height, width)
    except ValueError as err:
        raise ValueError(f"{name}: {where}: {err}") from None


# --- COCO results (predictions.json) and a predict run's shards ---------------------------------


def check_results(data, name: str) -> list[dict]:
    """``data`` if it is a list of COCO results as ``nailseg predict`` writes them (``file_name``,
    ``image_id``, ``category_id``, ``bbox`` xywh, ``score`` in [0, 1], RLE ``segmentation``).

    Raises:
        ValueError: the first thing that is wrong, with ``name`` and where it is.
    """
    _require(isinstance(data, list) and all(isinstance(r, dict) for r in data), name, "the file", "a list", data)
    for k, result in enumerate(data):
        where = f"[{k}]"
        for key, ok, expected in (
            ("file_name", lambda v: isinstance(v, str) and bool(v), "a file name"),
            ("image_id", _is_int, "an integer"),
            ("category_id", _is_int, "an integer"),
            ("bbox", _is_box, "[x, y, w, h] (finite, w, h >= 0)"),
            ("score", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
            ("segmentation", _is_rle_shape, "an RLE object {size: [h, w], counts: str}"),
        ):
            _require(ok(result.get(key)), name, f"{where}.{key}", expected, result.get(key))
    return data


def _is_rle_shape(value) -> bool:
    """An RLE as written by pycocotools (not decoded here: predict never decodes what it resumes)."""
    if not isinstance(value, dict) or not isinstance(value.get("counts"), str):
        return False
    size = value.get("size")
    return isinstance(size, list) and len(size) == 2 and all(_is_int(s) and s >= 1 for s in size)


def check_shard(data, name: str) -> list[dict]:
    """``data`` if it is a ``predict --nproc`` worker's shard (see ``nailseg.outputs.write_shard``)."""
    _require(isinstance(data, list) and all(isinstance(e, dict) for e in data), name, "the file", "a list", data)
    for k, entry in enumerate(data):
        _require(isinstance(entry.get("name"), str), name, f"[{k}].name", "a file name", entry.get("name"))
        _require(_is_int(entry.get("image_id")), name, f"[{k}].image_id", "an integer", entry.get("image_id"))
        _require(isinstance(entry.get("failed"), bool), name, f"[{k}].failed", "true or false", entry.get("failed"))
        rows = entry.get("rows")
        _require(isinstance(rows, list) and all(isinstance(r, dict) for r in rows), name, f"[{k}].rows", "a list", rows)
        check_results(entry.get("results"), f"{name}: [{k}].results")
    return data
