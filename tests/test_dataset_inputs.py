"""Datasets and COCO files from elsewhere (issue 27: row 2's parser half, items 3 and 7).

Numbers are checked where they are parsed, so that pycocotools (C code that casts coordinates to
int and allocates without checking) never sees one it would crash on; every JSON file is checked
for its shape with a message naming the file; and ``nailseg convert`` loses nothing silently.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import DATA, PHOTOS, convert_test_photos

from nailseg import cli, convert
from nailseg.datasets import MAX_LABEL_BYTES, load_coco, load_yolo_polygons
from nailseg.json_files import check_coco, check_results


def yolo_dataset(root: Path, photos: list[Path] = PHOTOS[:2]) -> Path:
    """A flat YOLO-seg dataset of some of the test photos and their labels."""
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for photo in photos:
        shutil.copy(photo, root / "images" / photo.name)
        shutil.copy(DATA / "labels" / f"{photo.stem}.txt", root / "labels" / f"{photo.stem}.txt")
    return root


def convert_cli(capsys, root: Path, out: Path, *extra: str) -> tuple[int, dict, str]:
    code = cli.main(["convert", str(root), "--out", str(out), "--valid-fraction", "0", "--workers", "1", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


# --- row 2: a YOLO line that pycocotools would die on ------------------------------------------


def limit_memory() -> None:
    """In the child: at most 3 GiB of address space, so a runaway allocation fails instead of
    taking the machine's memory (pycocotools then segfaults: exit -11)."""
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))


@pytest.mark.parametrize("value", ["nan", "inf", "1e20", "-1e9"])
def test_a_yolo_label_pycocotools_would_die_on_is_a_listed_problem(tmp_path, value):
    root = yolo_dataset(tmp_path / "ds")
    bad = PHOTOS[0]
    (root / "labels" / f"{bad.stem}.txt").write_text(f"0 {value} {value} 0.5 0.5 0.2 0.9\n")
    done = subprocess.run(
        [sys.executable, "-m", "nailseg", "convert", str(root), "--out", str(tmp_path / "out"), "--workers", "1"],
        capture_output=True,
        text=True,
        preexec_fn=limit_memory,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    (problem,) = summary["problems"]
    assert problem["file"] == f"images/{bad.name}" and problem["problem"].startswith("line 1: ")
    assert summary["photos"] == 1  # the other photo converts


YOLO_LINES = {
    "NaN": ("0 nan nan 0.5 0.5 0.2 0.9", "line 1: nan is not a finite number"),
    "inf": ("0 0.1 0.1 inf 0.5 0.2 0.9", "line 1: inf is not a finite number"),
    "huge": ("0 1e20 0.1 0.5 0.5 0.2 0.9", "line 1: point (1e+22, 10) lies outside the 100x100 photo"),
    "outside": ("0 0.1 0.1 1.02 0.5 0.2 0.9", "line 1: point (102, 50) lies outside"),
    "odd count": ("0 0.1 0.1 0.2 0.2 0.3", "line 1: a polygon needs an even number of coordinates, got 5"),
    "two points": ("0 0.1 0.1 0.2 0.2", "line 1: a polygon needs 3 to 4096 points, got 2"),
    "not a number": ("0 0.1 abc 0.2 0.2 0.3 0.3", "line 1: could not convert string to float"),
    "too many points": ("0 " + "0.5 " * 2 * 4097, "line 1: a polygon needs 3 to 4096 points, got 4097"),
    "zigzag outline": ("0 " + "0 0 1 1 " * 600, "line 1: the polygon's outline is 120000 px long; the limit is 100000"),
}


@pytest.mark.parametrize("line, message", YOLO_LINES.values(), ids=YOLO_LINES.keys())
def test_yolo_numbers_are_checked_where_they_are_parsed(tmp_path, line, message):
    label = tmp_path / "x.txt"
    label.write_text(line + "\n")
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        load_yolo_polygons(label, 100, 100)


def test_yolo_points_just_outside_the_photo_are_kept(tmp_path):
    label = tmp_path / "x.txt"
    label.write_text("0 -0.005 0 1.009 0 1.0 1.0 0 1.0\n")  # labelling tools round a little outside
    (polygon,) = load_yolo_polygons(label, 200, 100)
    np.testing.assert_allclose(polygon, [[-1.0, 0.0], [201.8, 0.0], [200.0, 100.0], [0.0, 100.0]])
    (mask,) = convert.polygons_to_instances([polygon], 100, 200)
    assert mask.all()


def test_a_label_file_too_large_is_refused_unread(tmp_path):
    label = tmp_path / "x.txt"
    label.write_bytes(b" " * (MAX_LABEL_BYTES + 1))
    with pytest.raises(ValueError, match="larger than 4 MiB"):
        load_yolo_polygons(label, 100, 100)


# --- item 7: convert loses nothing silently ---------------------------------------------------


def test_two_photos_with_one_name_are_both_listed(tmp_path, capsys):
    root = yolo_dataset(tmp_path / "ds")
    photo = PHOTOS[0]
    from PIL import Image

    Image.open(photo).save(root / "images" / f"{photo.stem}.png")
    code, summary, err = convert_cli(capsys, root, tmp_path / "out")
    assert code == 0 and summary["photos"] == 1
    listed = {p["file"]: p["problem"] for p in summary["problems"]}
    assert listed.keys() == {f"images/{photo.name}", f"images/{photo.stem}.png"}
    assert all(p.startswith("one name for several files") for p in listed.values())
    assert f"images/{photo.stem}.png" in err


def test_two_labels_with_one_name_are_listed_by_their_photo(tmp_path, capsys):
    root = tmp_path / "semantic"
    for sub, name in (("Images", "a.jpg"), ("Masks", "a.png"), ("Masks", "a.PNG")):
        (root / sub / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTOS[0], root / sub / "1" / name)
    code, summary, _ = convert_cli(capsys, root, tmp_path / "out")
    assert code == 1 and summary["problems"] == [
        {"file": "Images/1/a.jpg", "problem": "one name for several files (a.jpg, a.PNG, a.png)"}
    ]


def test_a_truncated_photo_is_found_and_listed(tmp_path, capsys):
    root = yolo_dataset(tmp_path / "ds")
    photo = root / "images" / PHOTOS[0].name
    photo.write_bytes(photo.read_bytes()[: photo.stat().st_size * 3 // 4])  # header intact, pixels cut
    code, summary, _ = convert_cli(capsys, root, tmp_path / "out")
    assert code == 0 and summary["photos"] == 1
    assert summary["problems"] == [
        {"file": f"images/{photo.name}", "problem": "the image file is truncated (incomplete download?)"}
    ]


def test_strict_writes_nothing_when_it_fails(tmp_path, capsys):
    root = yolo_dataset(tmp_path / "ds")
    (root / "labels" / f"{PHOTOS[0].stem}.txt").write_text("0 0.1 0.1 0.2 0.2 0.3\n")  # an odd count
    out = tmp_path / "out"
    code, summary, err = convert_cli(capsys, root, out, "--strict")
    assert code == 1 and "written" not in summary
    assert "1 problem(s) and --strict was given; no file was written" in err
    assert not out.exists()
    code, summary, _ = convert_cli(capsys, root, out)  # without --strict, the rest is written
    assert code == 0 and len(summary["written"]) == 3


def test_output_files_keep_the_usual_mode(tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        code, summary, _ = convert_cli(capsys, yolo_dataset(tmp_path / "ds"), tmp_path / "out")
    finally:
        os.umask(previous)
    assert code == 0
    assert {Path(p).name: oct(Path(p).stat().st_mode & 0o777) for p in summary["written"]} == {
        "train.json": "0o644",
        "valid.json": "0o644",
        "manifest.csv": "0o644",
    }


# --- item 3: every JSON file checked for its shape ---------------------------------------------


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> dict:
    """A valid COCO file: the test photos as `nailseg convert` writes them."""
    return json.loads((convert_test_photos(tmp_path_factory.mktemp("coco"), 0) / "train.json").read_text())


def first_polygon_annotation(coco: dict) -> int:
    return next(k for k, a in enumerate(coco["annotations"]) if isinstance(a["segmentation"], list))


def set_path(data, path: str, value):
    """``data`` with the value at ``path`` (``a.0.b``; ``annotations.P`` is the first polygon) replaced."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    *parents, last = keys
    node = data
    for key in parents:
        node = node[first_polygon_annotation(data) if key == "P" else key]
    node[last] = value
    return data


COCO_CASES = {
    "a list": (lambda c: [], "is not a COCO file (expected a JSON object, got [])"),
    "images not a list": (lambda c: {**c, "images": {}}, "images must be a list of objects, got {}"),
    "image id a string": (lambda c: set_path(c, "images.0.id", "1"), "images[0].id must be an integer"),
    "image width 0": (lambda c: set_path(c, "images.0.width", 0), "images[0].width must be a positive integer"),
    "image of 100 MP": (lambda c: set_path(c, "images.0.width", 10**8), "images[0] must be at most 60 MP"),
    "an id twice": (lambda c: set_path(c, "images.1.id", c["images"][0]["id"]), "images[1].id must be unique"),
    "no categories": (lambda c: {k: v for k, v in c.items() if k != "categories"}, "categories must be a list"),
    "unknown image": (lambda c: set_path(c, "annotations.0.image_id", 999), "annotations[0].image_id must be the id"),
    "bbox NaN": (lambda c: set_path(c, "annotations.0.bbox", [0, 0, float("nan"), 1]), "annotations[0].bbox must be"),
    "bbox of 3": (lambda c: set_path(c, "annotations.0.bbox", [0, 0, 1]), "annotations[0].bbox must be"),
    "area inf": (lambda c: set_path(c, "annotations.0.area", float("inf")), "annotations[0].area must be a finite"),
    "iscrowd 2": (lambda c: set_path(c, "annotations.0.iscrowd", 2), "annotations[0].iscrowd must be 0 or 1"),
    "polygon 1e20": (
        lambda c: set_path(c, "annotations.P.segmentation", [[1e20, 1, 5, 5, 1, 9]]),
        "segmentation: point (1e+20, 1) lies outside",
    ),
    "polygon NaN": (
        lambda c: set_path(c, "annotations.P.segmentation", [[float("nan"), 1, 5, 5, 1, 9]]),
        "segmentation must be polygons or an RLE object, got [[nan",
    ),
    "polygon nested": (
        lambda c: set_path(c, "annotations.P.segmentation", [[[1, 2], [3, 4], [5, 6]]]),
        "segmentation must be polygons or an RLE object",
    ),
    "RLE of another size": (
        lambda c: set_path(c, "annotations.P.segmentation", {"size": [1, 1], "counts": "1"}),
        "segmentation: an RLE segmentation must be {'size': [",
    ),
    "RLE runs past the photo": (
        lambda c: set_path(c, "annotations.P.segmentation", {"size": rle_size(c), "counts": [10**9]}),
        "segmentation: the RLE runs do not cover",
    ),
    "RLE string cut off": (
        lambda c: set_path(c, "annotations.P.segmentation", {"size": rle_size(c), "counts": "0P"}),
        "segmentation: the RLE counts string ends inside a number",
    ),
    "501 nails on a photo": (
        lambda c: {**c, "annotations": [{**c["annotations"][0], "id": k} for k in range(501)]},
        "has more than 500 annotations",
    ),
}


def rle_size(coco: dict) -> list[int]:
    """``[height, width]`` of the photo of the first polygon annotation."""
    image_id = coco["annotations"][first_polygon_annotation(coco)]["image_id"]
    image = next(i for i in coco["images"] if i["id"] == image_id)
    return [image["height"], image["width"]]


@pytest.mark.parametrize("change, message", COCO_CASES.values(), ids=COCO_CASES.keys())
def test_a_coco_file_of_the_wrong_shape_is_refused_by_name(coco, change, message):
    data = change(json.loads(json.dumps(coco)))
    with pytest.raises(ValueError, match="^gt.json") as err:
        check_coco(data, "gt.json")
    assert message in str(err.value)


def test_a_converted_file_and_its_round_trip_pass(coco, tmp_path):
    from nailseg.evaluate import coco_nails

    path = tmp_path / "train.json"
    path.write_text(json.dumps(coco))
    assert load_coco(path) == coco
    for image in coco["images"]:
        assert len(coco_nails(coco, image)) == sum(a["image_id"] == image["id"] for a in coco["annotations"])


def test_coco_rle_is_checked_as_pycocotools_reads_it():
    from pycocotools import mask as mask_utils

    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 10:30] = 1
    counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
    assert sum(convert.rle_counts(counts)) == 30 * 40
    assert convert.check_rle({"size": [30, 40], "counts": counts}, 30, 40)
    for bad in (counts[:-1] + "`", counts + "~", "o" * 8):  # a number cut off, a stray character, too long
        with pytest.raises(ValueError, match="RLE"):
            convert.check_rle({"size": [30, 40], "counts": bad}, 30, 40)


RESULTS_CASES = {
    "an object": ({"a": 1}, "the file must be a list"),
    "no file name": ([{"image_id": 1}], "[0].file_name must be a file name"),
    "score 2": (
        [{"file_name": "a.jpg", "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 2}],
        "[0].score must be a number in [0, 1]",
    ),
    "segmentation a polygon": (
        [
            {
                "file_name": "a.jpg",
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 1, 1],
                "score": 0.5,
                "segmentation": [[0, 0, 1, 1, 0, 1]],
            }
        ],
        "[0].segmentation must be an RLE object",
    ),
}


@pytest.mark.parametrize("data, message", RESULTS_CASES.values(), ids=RESULTS_CASES.keys())
def test_a_predictions_file_of_the_wrong_shape_is_refused_by_name(data, message):
    with pytest.raises(ValueError, match="^out/predictions.json: ") as err:
        check_results(data, "out/predictions.json")
    assert message in str(err.value)


def test_a_weights_config_with_a_type_that_is_not_a_name_is_refused(tmp_path):
    from nailseg.weights import BUNDLED_WEIGHTS, WeightsError, load_model_config

    config = json.loads(BUNDLED_WEIGHTS.with_suffix(".json").read_text())
    config["model"]["type"] = {}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"^m\.json: model: type '\{\}' is not one this project builds"):
        load_model_config(path)
    path.write_text(json.dumps(config).replace("{}", "1e999"))
    with pytest.raises(WeightsError, match=r"^config m\.json is not standard JSON \(1e999 overflows a float"):
        load_model_config(path)


def test_every_atomic_write_keeps_the_usual_mode(tmp_path):
    # predictions.json, crops.csv, exported configs: all written by write_atomic, none left 0600.
    from nailseg.files import write_atomic

    previous = os.umask(0o022)
    try:
        written = write_atomic(tmp_path / "predictions.json", "[]")
        os.umask(0o077)
        private = write_atomic(tmp_path / "private.json", "[]")
    finally:
        os.umask(previous)
    assert oct(written.stat().st_mode & 0o777) == "0o644"
    assert oct(private.stat().st_mode & 0o777) == "0o600"  # the umask decides, as for any new file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.json", "private.json"]  # no temp left
