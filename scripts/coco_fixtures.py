"""Write the COCO test fixtures in tests/data/ (issue 23): the test photos' own labels, as each tool writes COCO.

The nails are those of the YOLO-seg labels in tests/data/nails-roboflow/labels/ (their polygons
in pixels, unrounded), so a test can hold what ``nailseg convert`` reads from a fixture against
what it reads from those labels. The photos are links to tests/data/nails-roboflow/images/ (CC BY
4.0, see tests/data/ATTRIBUTION.md), placed where each tool's export puts them:

* ``coco-cvat-1.0``: CVAT's "COCO 1.0" task export (Datumaro's writer): ``annotations/
  instances_default.json`` + ``images/default/``;
* ``coco-roboflow-segmentation``: Roboflow's "COCO Segmentation" export: ``train/ valid/ test/``,
  each with ``_annotations.coco.json`` beside its photos, category 0 the project's (unused);
* ``coco-plain``: an ``annotations.json`` beside the photos, as ``nailseg predict`` writes one
  (a ``score`` per annotation) but with only what COCO requires;
* ``coco-rle-crowd``: compressed RLE, uncompressed RLE and polygon nails, and two nails as one
  crowd region (``iscrowd`` 1, uncompressed RLE, as CVAT writes masks);
* ``coco-two-categories``: nails and fingers (a box around each nail, as a polygon);
* ``coco-broken``: one photo missing, and one problem each on the others (a polygon crossing
  itself, a box without a mask, a size that is not the photo's, a point outside the photo), one
  photo fine.

Run from the repository root: ``python scripts/coco_fixtures.py`` (it rewrites those folders).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from nailseg.convert import polygons_to_instances
from nailseg.datasets import load_yolo_polygons
from nailseg.images import exif_size

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SOURCE = DATA / "nails-roboflow"
PHOTOS = sorted((SOURCE / "images").glob("*.jpg"))
A, B, C, D, E, F = PHOTOS  # 5, 3, 9, 1, 1 and 1 nails


def nails(photo: Path) -> tuple[int, int, list[np.ndarray], list[np.ndarray]]:
    """``(width, height, polygons, masks)`` of a test photo's labelled nails, polygons ``(K, 2)`` in pixels."""
    width, height = exif_size(photo)
    polygons = load_yolo_polygons(SOURCE / "labels" / f"{photo.stem}.txt", width, height)
    return width, height, polygons, polygons_to_instances(polygons, height, width)


def box_and_area(mask: np.ndarray) -> tuple[list[float], float]:
    """COCO's ``bbox`` (xywh) and ``area`` of a mask, as the tools compute them."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return [float(v) for v in mask_utils.toBbox(rle)], float(mask_utils.area(rle))


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths down the columns, starting with a run of background."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def annotation(ann_id: int, image_id: int, category_id: int, segmentation, mask: np.ndarray, **extra) -> dict:
    bbox, area = box_and_area(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "area": area,
        "bbox": bbox,
        "iscrowd": 0,
        **extra,
    }


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def link(photo: Path, folder: Path, name: str | None = None) -> None:
    """A relative link to a test photo: the fixture stays small, and the photo keeps its one attribution."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (name or photo.name)).symlink_to(os.path.relpath(photo, folder))


def cvat(root: Path) -> None:
    images, anns = [], []
    for image_id, photo in enumerate([A, B], start=1):
        width, height, polygons, masks = nails(photo)
        images.append(
            {
                "id": image_id,
                "width": width,
                "height": height,
                "file_name": photo.name,
                "license": 0,
                "flickr_url": "",
                "coco_url": "",
                "date_captured": 0,
            }
        )
        for polygon, mask in zip(polygons, masks):
            segmentation = [polygon.ravel().tolist()]
            anns.append(annotation(len(anns) + 1, image_id, 1, segmentation, mask, attributes={"occluded": False}))
        link(photo, root / "images" / "default")
    info = {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""}
    write(
        root / "annotations" / "instances_default.json",
        {
            "licenses": [{"name": "", "id": 0, "url": ""}],
            "info": info,
            "categories": [{"id": 1, "name": "nail", "supercategory": ""}],
            "images": images,
            "annotations": anns,
        },
    )


def roboflow(root: Path) -> None:
    project = "nails-segmentation"
    for split, photo in (("train", C), ("valid", D), ("test", E)):
        width, height, polygons, masks = nails(photo)
        image = {
            "id": 0,
            "license": 1,
            "file_name": photo.name,
            "height": height,
            "width": width,
            "date_captured": "2024-01-01T00:00:00+00:00",
        }
        anns = [
            annotation(k, 0, 1, [polygon.ravel().tolist()], mask)
            for k, (polygon, mask) in enumerate(zip(polygons, masks))
        ]
        write(
            root / split / "_annotations.coco.json",
            {
                "info": {"year": "2024", "version": "1", "description": "Exported from roboflow.com"},
                "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
                "categories": [
                    {"id": 0, "name": project, "supercategory": "none"},
                    {"id": 1, "name": "nail", "supercategory": project},
                ],
                "images": [image],
                "annotations": anns,
            },
        )
        link(photo, root / split)


def plain(root: Path) -> None:
    images, anns = [], []
    for image_id, photo in enumerate([A, F], start=1):
        width, height, polygons, masks = nails(photo)
        images.append({"id": image_id, "file_name": photo.name, "width": width, "height": height})
        for polygon, mask in zip(polygons, masks):
            anns.append(annotation(len(anns) + 1, image_id, 1, [polygon.ravel().tolist()], mask, score=0.97))
        link(photo, root)
    write(root / "annotations.json", {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "nail"}]})


def rle_crowd(root: Path) -> None:
    width, height, polygons, masks = nails(C)
    anns = []
    for k, (polygon, mask) in enumerate(zip(polygons[:7], masks[:7])):
        if k % 3 == 0:
            segmentation = compressed_rle(mask)
        elif k % 3 == 1:
            segmentation = uncompressed_rle(mask)
        else:
            segmentation = [polygon.ravel().tolist()]
        anns.append(annotation(k + 1, 1, 1, segmentation, mask))
    crowd = masks[7] | masks[8]
    anns.append(annotation(8, 1, 1, uncompressed_rle(crowd), crowd, iscrowd=1))
    image = {"id": 1, "file_name": C.name, "width": width, "height": height}
    categories = [{"id": 1, "name": "nail"}]
    write(root / "annotations.json", {"images": [image], "annotations": anns, "categories": categories})
    link(C, root)


def two_categories(root: Path) -> None:
    width, height, polygons, masks = nails(A)
    anns = []
    for polygon, mask in zip(polygons, masks):
        anns.append(annotation(len(anns) + 1, 1, 1, [polygon.ravel().tolist()], mask))
        x0, y0, w, h = box_and_area(mask)[0]
        x0, y0, x1, y1 = max(x0 - 10, 0), max(y0 - 10, 0), min(x0 + w + 10, width), min(y0 + h + 10, height)
        finger = np.zeros((height, width), bool)
        finger[int(y0) : int(y1), int(x0) : int(x1)] = True
        anns.append(annotation(len(anns) + 1, 1, 2, [[x0, y0, x1, y0, x1, y1, x0, y1]], finger))
    categories = [{"id": 1, "name": "nail", "supercategory": ""}, {"id": 2, "name": "finger", "supercategory": ""}]
    image = {"id": 1, "file_name": A.name, "width": width, "height": height}
    write(root / "annotations.json", {"images": [image], "annotations": anns, "categories": categories})
    link(A, root)


def broken(root: Path) -> None:
    images, anns = [], []

    def add(photo: Path | None, name: str, width: int, height: int, segmentations: list, **extra) -> None:
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for segmentation in segmentations:
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "segmentation": segmentation}
            anns.append({**ann, **extra})
        if photo is not None:
            link(photo, root)

    width, height, polygons, _ = nails(A)
    triangle = [[10, 10, 50, 10, 50, 50]]
    add(A, A.name, width, height, [[p.ravel().tolist()] for p in polygons])  # fine
    add(None, "gone.jpg", width, height, [triangle])  # no such photo
    add(B, B.name, width, height, [[[100, 100, 200, 200, 200, 100, 100, 200]]])  # a bow tie: crosses itself
    add(D, D.name, width, height, [[]], bbox=[10, 10, 40, 40], area=1600)  # a box without a mask, as CVAT writes one
    add(E, E.name, width + 1, height, [triangle])  # not the photo's size
    add(F, F.name, width, height, [[[10, 10, 5000, 10, 50, 50]]])  # a point outside the photo
    categories = [{"id": 1, "name": "nail"}]
    write(root / "annotations.json", {"images": images, "annotations": anns, "categories": categories})


def main() -> None:
    for name, build in (
        ("coco-cvat-1.0", cvat),
        ("coco-roboflow-segmentation", roboflow),
        ("coco-plain", plain),
        ("coco-rle-crowd", rle_crowd),
        ("coco-two-categories", two_categories),
        ("coco-broken", broken),
    ):
        shutil.rmtree(DATA / name, ignore_errors=True)
        build(DATA / name)
        print(f"wrote {DATA / name}")


if __name__ == "__main__":
    main()
