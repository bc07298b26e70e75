"""COCO instances from labelling tools back in (issue 23, item 2).

``nailseg convert`` reads CVAT's, Roboflow's and the plain layout, each a fixture in tests/data/
written as that tool documents its export (``scripts/coco_fixtures.py``), with the test photos'
own labels in it: what it reads must be, pixel for pixel, what it reads from those photos' YOLO
labels. Whatever is wrong is a listed problem naming the file and the place, never a traceback.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from support import COCO_FIXTURES, DATA, coco_masks, folder_zip, label_count, label_masks, same_masks

from nailseg import cli
from nailseg.datasets import convert_dataset, load_coco

A, B, C, D, E, F = sorted((DATA / "images").glob("*.jpg"))  # as scripts/coco_fixtures.py names them


def convert_cli(capsys, root: Path, out: Path, *extra: str) -> tuple[int, dict, str]:
    """``nailseg convert ROOT --out OUT --valid-fraction 0``: exit code, the printed summary, stderr."""
    code = cli.main(["convert", str(root), "--out", str(out), "--valid-fraction", "0", "--workers", "1", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


def problems_of(summary: dict) -> dict[str, str]:
    return {p["file"]: p["problem"] for p in summary["problems"]}


# --- each tool's layout -------------------------------------------------------------------------

LAYOUTS = {
    "CVAT COCO 1.0": ("coco-cvat-1.0", {"default": [A, B]}),
    "Roboflow COCO Segmentation": ("coco-roboflow-segmentation", {"test": [E], "train": [C], "valid": [D]}),
    "plain annotations.json": ("coco-plain", {"default": [A, F]}),
}


@pytest.mark.parametrize("fixture, groups", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_each_tools_export_gives_the_labelled_nails(tmp_path, capsys, fixture, groups):
    code, summary, err = convert_cli(capsys, COCO_FIXTURES / fixture, tmp_path / "out")
    assert code == 0 and not summary["problems"], err
    assert summary["layout"] == "coco"
    assert summary["groups"] == {group: len(photos) for group, photos in groups.items()}
    photos = [photo for group in groups.values() for photo in group]
    assert summary["nails"] == sum(label_count(p) for p in photos)
    assert summary["categories"] == {"kept": {"nail": summary["nails"]}, "left_out": {}}
    train = load_coco(tmp_path / "out" / "train.json")
    found = coco_masks(train)
    assert sorted(found) == sorted(p.name for p in photos)
    for photo in photos:
        assert same_masks(found[photo.name], label_masks(photo)), photo.name
    # Training finds every photo through the folder recorded and the file names.
    root = Path(train["info"]["dataset_root"])
    assert all((root / image["file_name"]).is_file() for image in train["images"])


def test_a_zip_is_extracted_beside_the_coco_files_and_never_over_an_earlier_one(tmp_path, capsys):
    archive = folder_zip(COCO_FIXTURES / "coco-cvat-1.0", tmp_path / "task.zip")  # CVAT's export, as downloaded
    out = tmp_path / "out"
    code, summary, err = convert_cli(capsys, archive, out)
    assert code == 0 and not summary["problems"], err
    train = load_coco(out / "train.json")
    assert Path(train["info"]["dataset_root"]) == (out / cli.ZIP_PHOTOS).resolve()
    assert sorted(i["file_name"] for i in train["images"]) == [f"images/default/{p.name}" for p in (A, B)]
    assert same_masks(coco_masks(train)[A.name], label_masks(A))
    again, _, err = convert_cli(capsys, archive, out)
    assert again == 2 and "exists from an earlier conversion" in err and "Traceback" not in err


def test_a_zip_without_a_dataset_leaves_no_photos_behind(tmp_path, capsys):
    with zipfile.ZipFile(tmp_path / "misc.zip", "w") as zf:
        zf.writestr("notes/readme.txt", "hello")
    code, _, err = convert_cli(capsys, tmp_path / "misc.zip", tmp_path / "out")
    assert code == 2 and "no dataset found" in err
    assert not (tmp_path / "out" / cli.ZIP_PHOTOS).exists()


# --- what COCO defines: RLE, crowd regions, categories ------------------------------------------


def encoding(segmentation) -> str:
    if isinstance(segmentation, list):
        return "polygons"
    return "compressed RLE" if isinstance(segmentation["counts"], str) else "uncompressed RLE"


def test_rle_compressed_and_not_and_crowd_regions_as_coco_defines_them(tmp_path, capsys):
    source = json.loads((COCO_FIXTURES / "coco-rle-crowd" / "annotations.json").read_text())
    kinds = {encoding(a["segmentation"]) for a in source["annotations"]}
    assert kinds == {"polygons", "compressed RLE", "uncompressed RLE"}  # the fixture holds each kind
    code, summary, err = convert_cli(capsys, COCO_FIXTURES / "coco-rle-crowd", tmp_path / "out")
    assert code == 0 and not summary["problems"], err
    assert (summary["nails"], summary["crowd_regions"]) == (7, 1)
    train = load_coco(tmp_path / "out" / "train.json")
    truth = label_masks(C)
    assert same_masks(coco_masks(train)[C.name], truth[:7])
    assert same_masks(coco_masks(train, crowd=True)[C.name], [truth[7] | truth[8]])  # still one crowd region

    from nailseg.evaluate import coco_nails

    assert len(coco_nails(train, train["images"][0])) == 7  # a crowd region is no nail to find


def test_a_crowd_region_stays_out_of_mmdets_training_targets(tmp_path, capsys):
    """What mmdet makes of it, through the default config's train pipeline: 7 nails to learn, and
    the crowd region among the ``ignored_instances``."""
    pytest.importorskip("mmdet")
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import nailseg.model  # noqa: F401 - registers the project's modules
    from nailseg.paths import DEFAULT_CONFIG
    from nailseg.train import build_config

    convert_cli(capsys, COCO_FIXTURES / "coco-rle-crowd", tmp_path / "out")
    cfg = build_config(DEFAULT_CONFIG, data=tmp_path / "out", work_dir=tmp_path / "work")
    init_default_scope("mmdet")
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    sample = dataset[0]["data_samples"]
    assert len(sample.gt_instances) == 7 and len(sample.ignored_instances) == 1
    assert all(m.any() for m in sample.gt_instances.masks.masks)


def finger_and_nail_masks() -> dict[str, list[np.ndarray]]:
    """The two-category fixture's masks by category, decoded by pycocotools, in file order."""
    source = json.loads((COCO_FIXTURES / "coco-two-categories" / "annotations.json").read_text())
    masks = {}
    for category in source["categories"]:
        only = {**source, "annotations": [a for a in source["annotations"] if a["category_id"] == category["id"]]}
        masks[category["name"]] = coco_masks(only)[A.name]
    return masks


CATEGORY_CHOICES = {
    "default: the one that says nail": ((), ["nail"], {"finger": 5}),
    "--category finger": (("--category", "finger"), ["finger"], {"nail": 5}),
    "both, any case": (("--category", "NAIL", "--category", "Finger"), ["nail", "finger"], {}),
}


@pytest.mark.parametrize("extra, kept, left_out", CATEGORY_CHOICES.values(), ids=CATEGORY_CHOICES.keys())
def test_a_second_category_is_left_out_unless_chosen(tmp_path, capsys, extra, kept, left_out):
    code, summary, err = convert_cli(capsys, COCO_FIXTURES / "coco-two-categories", tmp_path / "out", *extra)
    assert code == 0 and not summary["problems"], err
    assert summary["categories"] == {"kept": {name: 5 for name in sorted(kept)}, "left_out": left_out}
    train = load_coco(tmp_path / "out" / "train.json")
    assert [c["name"] for c in train["categories"]] == ["nail"]  # whatever they were called
    by_category = finger_and_nail_masks()
    found = coco_masks(train)[A.name]
    expected = [m for pair in zip(by_category["nail"], by_category["finger"]) for m in pair]  # the file's order
    expected = [m for m, name in zip(expected, ["nail", "finger"] * 5) if name in kept]
    assert same_masks(found, expected)
    if kept == ["nail"]:
        assert same_masks(found, label_masks(A))


def test_a_category_no_file_has_is_an_error_naming_theirs(tmp_path, capsys):
    code, _, err = convert_cli(capsys, COCO_FIXTURES / "coco-two-categories", tmp_path / "out", "--category", "toe")
    assert code == 2
    assert err.strip() == "error: no category named toe in the COCO files (theirs: finger, nail)"


def test_several_categories_none_of_them_nail_is_a_listed_problem(tmp_path, capsys):
    root = shutil.copytree(COCO_FIXTURES / "coco-two-categories", tmp_path / "ds")
    path = root / "annotations.json"
    data = json.loads(path.read_text())
    data["categories"][0]["name"] = "object"
    path.write_text(json.dumps(data))
    code, summary, err = convert_cli(capsys, root, tmp_path / "out")
    assert code == 1 and "nothing was converted" in err and "Traceback" not in err
    assert problems_of(summary) == {
        "annotations.json": "its categories (finger, object): none says nail; choose with `nailseg convert "
        "--category NAME`, or name the category nail in the labelling tool",
        A.name: "photo without a label",
    }


# --- what is wrong is listed, the rest converts -------------------------------------------------


def test_a_broken_coco_file_lists_each_problem_and_converts_the_rest(tmp_path, capsys):
    root = COCO_FIXTURES / "coco-broken"
    source = json.loads((root / "annotations.json").read_text())
    first = {  # each photo's first annotation, where the file says what is wrong with it
        image["file_name"]: next(k for k, a in enumerate(source["annotations"]) if a["image_id"] == image["id"])
        for image in source["images"]
    }
    code, summary, err = convert_cli(capsys, root, tmp_path / "out")
    assert code == 0 and "Traceback" not in err
    assert problems_of(summary) == {
        "gone.jpg": "not found (named in annotations.json)",
        B.name: f"annotations.json: annotations[{first[B.name]}].segmentation: the polygon crosses itself at "
        "(150.0, 150.0)",
        D.name: f"annotations.json: annotations[{first[D.name]}] is a box without a mask",
        E.name: "size mismatch: photo 432x432, annotations.json says 433x432",
        F.name: f"annotations.json: annotations[{first[F.name]}].segmentation: point (5000, 10) lies outside the "
        "432x432 photo",
    }
    assert all(f"problem: {file}: {problem}" in err for file, problem in problems_of(summary).items())
    train = load_coco(tmp_path / "out" / "train.json")
    assert [i["file_name"] for i in train["images"]] == [A.name]
    assert same_masks(coco_masks(train)[A.name], label_masks(A))


def test_the_dataset_tab_lists_the_same_problems(tmp_path):
    """The app's path: the zip checked, extracted and converted in the sandboxed child."""
    from nailseg.dataset_zip import convert_in_child

    archive = folder_zip(COCO_FIXTURES / "coco-broken", tmp_path / "broken.zip")
    (tmp_path / "dest").mkdir()
    done = convert_in_child(str(archive), "broken.zip", tmp_path / "dest", tmp_path / "out", 0.0, False)
    summary = done["summary"]
    assert summary["layout"] == "coco" and summary["photos"] == 1 and summary["nails"] == label_count(A)
    problems = problems_of(summary)
    assert sorted(problems) == sorted(["gone.jpg", B.name, D.name, E.name, F.name])
    assert "crosses itself" in problems[B.name] and "box without a mask" in problems[D.name]
    assert str(tmp_path) not in json.dumps(summary)  # no server path for the visitor


def write_dataset(root: Path, images: list[dict], annotations: list[dict], photos: dict[str, Path]) -> Path:
    """``root/annotations.json`` (one category, nail) and the photos at their paths under ``root``."""
    for rel, photo in photos.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / rel)
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "nail"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def image(name: str, image_id: int = 1) -> dict:
    return {"id": image_id, "file_name": name, "width": 432, "height": 432}


def nail(segmentation, image_id: int = 1, **extra) -> dict:
    return {"id": 1, "image_id": image_id, "category_id": 1, "segmentation": segmentation, **extra}


SQUARE = [[100, 100, 140, 100, 140, 140, 100, 140]]
ODD_FILES = {
    "a path out of the folder": (
        [image("../outside.jpg")],
        [nail(SQUARE)],
        {"in.jpg": B},
        {"../outside.jpg": "not found (named in annotations.json)", "in.jpg": "photo without a label"},
    ),
    "an absolute path, found by its name": ([image("/elsewhere/a.jpg")], [nail(SQUARE)], {"a.jpg": A}, {}),
    "Windows separators": ([image("sub\\a.jpg")], [nail(SQUARE)], {"sub/a.jpg": A}, {}),
    "two photos with its name": (
        [image("else/a.jpg")],
        [nail(SQUARE)],
        {"x/a.jpg": A, "y/a.jpg": B},
        {
            "else/a.jpg": "not found where named, and 2 photos have its name (named in annotations.json)",
            "x/a.jpg": "photo without a label",
            "y/a.jpg": "photo without a label",
        },
    ),
    "one photo named twice": (
        [image("a.jpg"), image("a.jpg", 2)],
        [],
        {"a.jpg": A},
        {"a.jpg": "named by several COCO entries (annotations.json, annotations.json)"},
    ),
    "an annotation of no image": (
        [image("a.jpg")],
        [nail(SQUARE, image_id=9)],
        {"a.jpg": A},
        {"annotations.json": "annotations.json: annotations[0].image_id must be the id of an image, got 9"},
    ),
    "a category that is not there": (
        [image("a.jpg")],
        [nail(SQUARE, category_id=7)],
        {"a.jpg": A},
        {"a.jpg": "annotations.json: annotations[0].category_id must be a category's id, got 7"},
    ),
    "iscrowd 2": (
        [image("a.jpg")],
        [nail(SQUARE, iscrowd=2)],
        {"a.jpg": A},
        {"a.jpg": "annotations.json: annotations[0].iscrowd must be 0 or 1, got 2"},
    ),
    "a polygon of no pixel": (
        [image("a.jpg")],
        [nail([[100, 100, 100.2, 100, 100.2, 100.2]])],
        {"a.jpg": A},
        {"a.jpg": "annotations.json: annotations[0]: its mask covers no pixel"},
    ),
    "an RLE of another size": (
        [image("a.jpg")],
        [nail({"size": [10, 10], "counts": [100]})],
        {"a.jpg": A},
        {
            "a.jpg": "annotations.json: annotations[0].segmentation: an RLE segmentation must be {'size': [432, 432], "
            "'counts': ...}"
        },
    ),
    "no annotations: a photo without nails": ([image("a.jpg")], [], {"a.jpg": A}, {}),
}


@pytest.mark.parametrize("images, annotations, photos, problems", ODD_FILES.values(), ids=ODD_FILES.keys())
def test_odd_coco_files_give_the_nails_or_a_listed_problem(tmp_path, images, annotations, photos, problems):
    root = write_dataset(tmp_path / "ds", images, annotations, photos)
    if "../outside.jpg" in problems:
        shutil.copy(A, tmp_path / "outside.jpg")  # there, but outside the dataset: never read
    report = convert_dataset(root, valid_fraction=0, workers=1)
    assert dict(report.problems) == problems
    if not problems:
        assert report.converted == 1
        assert len(report.train["annotations"]) == len([a for a in annotations if a["image_id"] == 1])


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{", "annotations.json is not standard JSON"),
        ('{"images": {}, "annotations": [], "categories": []}', "annotations.json: images must be a list of objects"),
        ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": NaN}]}', "NaN is not a JSON number"),
        ("[]", "annotations.json is not a COCO file (expected a JSON object, got [])"),
    ],
)
def test_a_coco_file_of_the_wrong_shape_is_a_listed_problem(tmp_path, capsys, content, problem):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "annotations.json").write_text(content)
    shutil.copy(A, root / A.name)
    code, summary, err = convert_cli(capsys, root, tmp_path / "out")
    assert code == 1 and "Traceback" not in err
    assert problem in problems_of(summary)["annotations.json"]
    assert problems_of(summary)[A.name] == "photo without a label"
