"""The labelling loop (issue 23): pre-labels from ``nailseg predict``, and back through ``convert``.

The round trip is exact: the masks ``convert`` writes into ``train.json`` from ``annotations.json``
are the masks the model predicted, pixel for pixel, on the test photos with the bundled model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import DATA, PHOTOS, coco_masks, label_masks, same_masks

from nailseg import cli, convert, outputs
from nailseg.datasets import load_coco
from nailseg.images import exif_size


@pytest.fixture(scope="module")
def prelabelled(tmp_path_factory) -> Path:
    """``nailseg predict tests/data/nails-roboflow/images --out OUT --yolo`` with the real model."""
    out = tmp_path_factory.mktemp("prelabels") / "out"
    assert cli.main(["predict", str(DATA / "images"), "--out", str(out), "--yolo"]) == 0
    return out


def predicted(out: Path) -> dict[str, list[tuple[np.ndarray, float]]]:
    """Each photo's predicted ``(mask, score)`` from ``predictions.json`` (RLE: exact), by file
    name, in its order; empty masks (nothing to label) left out."""
    nails: dict[str, list[tuple[np.ndarray, float]]] = {}
    for result in json.loads((out / outputs.PREDICTIONS).read_text()):
        mask = convert.segmentation_to_mask(result["segmentation"], *result["segmentation"]["size"])
        if mask.any():
            nails.setdefault(Path(result["file_name"]).name, []).append((mask, result["score"]))
    return nails


def test_annotations_json_is_a_coco_dataset_pycocotools_loads(prelabelled):
    from pycocotools.coco import COCO

    coco = COCO(str(prelabelled / outputs.ANNOTATIONS))
    assert coco.dataset["categories"] == [convert.NAIL_CATEGORY]
    image_ids = sorted(coco.getImgIds())
    assert image_ids == list(range(1, len(PHOTOS) + 1))  # every photo, those without nails too
    annotations = coco.dataset["annotations"]
    assert sorted(coco.getAnnIds()) == list(range(1, len(annotations) + 1))
    assert all(a["image_id"] in image_ids and a["category_id"] == 1 and a["iscrowd"] == 0 for a in annotations)
    for image in coco.dataset["images"]:  # named as they lie beside the file, with their own size
        photo = DATA / "images" / image["file_name"]
        assert photo.is_file() and exif_size(photo) == (image["width"], image["height"])
    expected = {name: [score for _, score in nails] for name, nails in predicted(prelabelled).items()}
    scores = {coco.imgs[i]["file_name"]: [a["score"] for a in coco.imgToAnns[i]] for i in image_ids}
    assert {name: s for name, s in scores.items() if s} == expected  # each detection's, in its order
    assert sum(map(len, expected.values())) > 0
    assert any(isinstance(a["segmentation"], list) for a in annotations)  # polygons where they hold the mask


def test_predict_convert_round_trip_is_exact(prelabelled, tmp_path, capsys):
    """predict -> annotations.json beside the photos -> convert -> train.json: the predicted masks."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in PHOTOS:
        shutil.copy(photo, photos / photo.name)
    shutil.copy(prelabelled / outputs.ANNOTATIONS, photos / outputs.ANNOTATIONS)
    code = cli.main(["convert", str(photos), "--out", str(tmp_path / "coco"), "--valid-fraction", "0"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["layout"] == "coco" and not summary["problems"]
    converted = coco_masks(load_coco(tmp_path / "coco" / "train.json"))
    expected = predicted(prelabelled)
    assert {name for name, masks in converted.items() if masks} == set(expected)
    for name, nails in expected.items():
        assert same_masks(converted[name], [mask for mask, _ in nails]), name


def test_yolo_labels_give_the_same_nails_where_a_polygon_holds_them(prelabelled, tmp_path, capsys):
    """``--yolo``: the YOLO-seg labels, converted, give back every nail that ``annotations.json``
    holds as a polygon exactly, and the outline of the others (holes filled, its largest part)."""
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    for photo in PHOTOS:
        shutil.copy(photo, root / "images" / photo.name)
    shutil.copytree(prelabelled / outputs.LABELS, root / "labels")
    code = cli.main(["convert", str(root), "--out", str(tmp_path / "coco"), "--valid-fraction", "0"])
    assert code == 0 and json.loads(capsys.readouterr().out)["layout"] == "yolo"
    from_yolo = coco_masks(load_coco(tmp_path / "coco" / "train.json"))
    labels = json.loads((prelabelled / outputs.ANNOTATIONS).read_text())
    from_coco = coco_masks(labels)
    names = {image["id"]: image["file_name"] for image in labels["images"]}
    polygons = {name: [] for name in names.values()}
    for ann in labels["annotations"]:
        polygons[names[ann["image_id"]]].append(isinstance(ann["segmentation"], list))
    compared = 0
    for name, masks in from_coco.items():
        assert len(from_yolo[name]) == len(masks)
        for yolo, mask, polygon in zip(from_yolo[name], masks, polygons[name]):
            assert np.array_equal(yolo, mask) if polygon else (yolo & mask).sum() > mask.sum() / 2
            compared += polygon
    assert compared > 0


# --- the pieces ---------------------------------------------------------------------------------


def diagonal() -> np.ndarray:
    """Two squares meeting at one corner: their traced outline touches itself there."""
    mask = np.zeros((20, 20), bool)
    mask[2:8, 2:8] = mask[8:14, 8:14] = True
    return mask


CROSSINGS = {
    "a bow tie": ([0, 0, 10, 10, 10, 0, 0, 10], (5.0, 5.0)),
    "a square": ([0, 0, 10, 0, 10, 10, 0, 10], None),
    "a triangle": ([0, 0, 10, 0, 5, 5], None),
    "a fold at the end": ([0, 0, 10, 0, 10, 10, 0, 10, 6, -5], (4.0, 0.0)),
    "an edge drawn twice": ([0, 0, 10, 0, 10, 10, 10, 0], None),
    "the empty case": ([], None),
}


@pytest.mark.parametrize("polygon, point", CROSSINGS.values(), ids=CROSSINGS.keys())
def test_polygon_crossing(polygon, point):
    found = convert.polygon_crossing(polygon)
    assert found is None if point is None else found == pytest.approx(point)


def test_the_polygons_nailseg_writes_never_cross_themselves():
    """What ``convert`` (and ``predict``'s pre-labels) write must pass the check they get on the way back."""
    masks = [diagonal(), *(m for photo in PHOTOS for m in label_masks(photo))]
    polygons = [s[0] for s in map(convert.encode_segmentation, masks) if isinstance(s, list)]
    assert len(polygons) > 10
    assert [convert.polygon_crossing(p) for p in polygons] == [None] * len(polygons)


def test_outline_polygon_is_the_written_polygon_or_the_outer_outline():
    square = np.zeros((30, 30), bool)
    square[5:15, 8:20] = True
    assert np.array_equal(np.ravel(convert.outline_polygon(square)), convert.encode_segmentation(square)[0])
    ring = square.copy()
    ring[8:12, 11:17] = False  # a hole: written as RLE, outlined without it
    filled = convert.segmentation_to_mask([convert.outline_polygon(ring).ravel().tolist()], 30, 30)
    assert isinstance(convert.encode_segmentation(ring), dict) and np.array_equal(filled, square)
    two = square.copy()
    two[20:22, 20:22] = True  # a speck apart: the larger part is outlined
    assert np.array_equal(convert.outline_polygon(two), convert.outline_polygon(square))


@pytest.mark.parametrize(
    "names, expected",
    [
        (["p/a.jpg", "p/b/c.jpg"], ["a.jpg", "b/c.jpg"]),
        (["p/q/a.jpg"], ["a.jpg"]),
        (["x/a.jpg", "y/a.jpg"], ["x/a.jpg", "y/a.jpg"]),
        ([], []),
    ],
)
def test_label_names_are_relative_to_the_folder_the_photos_share(tmp_path, monkeypatch, names, expected):
    from nailseg.predict import label_names

    monkeypatch.chdir(tmp_path)
    assert label_names(names) == expected


@pytest.mark.parametrize(
    "file_name, expected",
    [
        ("a.jpg", "labels/a.txt"),
        ("sub/a.b.PNG", "labels/sub/a.b.txt"),
        ("sub\\a.jpg", "labels/sub/a.txt"),
        ("../../etc/a.jpg", "labels/a.txt"),
        ("/abs/a.jpg", "labels/a.txt"),
        ("a\0.jpg", "labels/a.txt"),
        ("", "labels/photo.txt"),
    ],
)
def test_a_label_file_stays_in_labels(file_name, expected):
    assert outputs.label_file(file_name) == expected


@pytest.mark.parametrize(
    "names, expected",
    [
        (["image.jpg", "image.jpg", "b.png", "image.jpg"], ["image.jpg", "image-2.jpg", "b.png", "image-3.jpg"]),
        (["a", "a", ".x", ".x"], ["a", "a-2", ".x", ".x-2"]),
        ([], []),
    ],
)
def test_unique_names(names, expected):
    from nailseg.files import unique_names

    assert unique_names(names) == expected


def test_the_batchs_labels_are_at_the_size_each_photo_was_uploaded():
    from nailseg.result import Nails
    from nailseg.tabs.segment import uploaded_size_labels

    masks = np.zeros((2, 10, 20), bool)
    masks[0, 2:6, 4:10] = True  # masks[1] is empty: no label
    nails = Nails(np.array([[4, 2, 10, 6], [0, 0, 1, 1]], np.float32), masks, np.array([0.9, 0.8], np.float32))
    labels = uploaded_size_labels("photo.jpg", nails, (60, 30))
    assert (labels.file_name, labels.width, labels.height) == ("photo.jpg", 60, 30)
    (annotation,) = labels.annotations
    assert annotation["bbox"] == [12, 6, 18, 12] and annotation["score"] == pytest.approx(0.9)
    expected = np.zeros((30, 60), bool)
    expected[6:18, 12:30] = True
    assert np.array_equal(convert.segmentation_to_mask(annotation["segmentation"], 30, 60), expected)
    (line,) = labels.yolo_lines
    points = np.array(line.split()[1:], float).reshape(-1, 2) * (60, 30)
    assert line.startswith("0 ") and len(points) >= 4
    assert np.array_equal(convert.segmentation_to_mask([points.ravel().tolist()], 30, 60), expected)
