"""Dataset edge: discovery, bad input, the split, what `nailseg convert` writes, and that it trains."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from support import DATA as ROBOFLOW

from nailseg import cli
from nailseg.datasets import (
    ConvertedSample,
    Sample,
    convert_dataset,
    discover,
    load_coco,
    save_report,
    split_samples,
)


def write_image(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` with OpenCV, choosing the codec from the suffix in any case (``.JPG`` too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix.lower(), array)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def nail_mask(height: int, width: int, nails: int, scale: int = 255, seed: int = 0) -> np.ndarray:
    """``(H, W) uint8`` mask with ``nails`` separate ellipses of value ``scale`` (1 or 255)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    for k in range(nails):
        centre = (int((k + 0.5) * width / nails), int(rng.integers(height // 3, 2 * height // 3)))
        cv2.ellipse(mask, centre, (max(2, width // (3 * nails)), height // 4), 0, 0, 360, scale, thickness=-1)
    return mask


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A random ``(H, W, 3) uint8`` photo (distinct per seed, so no two are byte-identical)."""
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def make_semantic(root: Path, specs: list[tuple[str, str, str, int, int]]) -> Path:
    """Seed layout ``Images/<group>/<name><ext>`` + ``Masks/<group>/<name>.png``.

    ``specs``: ``(group, name, photo extension, nails, mask scale)``; photos are 40x60 px.
    """
    for i, (group, name, ext, nails, scale) in enumerate(specs):
        write_image(root / "Images" / group / f"{name}{ext}", photo(40, 60, seed=i))
        mask_ext = ".PNG" if i % 2 else ".png"
        write_image(root / "Masks" / group / f"{name}{mask_ext}", nail_mask(40, 60, nails, scale, seed=i))
    return root


MIXED = [
    ("1", "a", ".png", 2, 255),
    ("1", "b", ".jpg", 1, 1),  # 0/1 mask
    ("2", "c", ".JPG", 3, 255),
    ("2", "d", ".PNG", 1, 1),
]


@pytest.fixture
def semantic(tmp_path) -> Path:
    return make_semantic(tmp_path / "semantic", MIXED)


def run_cli(capsys, *args) -> tuple[int, dict, str]:
    """``nailseg convert ARGS`` in-process: exit code, the printed summary, stderr."""
    code = cli.main(["convert", *map(str, args)])
    captured = capsys.readouterr()
    summary = json.loads(captured.out) if captured.out.strip() else {}
    return code, summary, captured.err


# --- layouts ------------------------------------------------------------------------------------


def test_semantic_mixed_extensions_and_scales(semantic):
    report = convert_dataset(semantic, valid_fraction=0, workers=1)
    assert report.layout == "semantic" and not report.problems
    by_name = {Path(i["file_name"]).stem: i["id"] for i in report.train["images"]}
    per_image = {n: sum(a["image_id"] == i for a in report.train["annotations"]) for n, i in by_name.items()}
    assert per_image == {"a": 2, "b": 1, "c": 3, "d": 1}  # 0/1 masks convert like 0/255 ones
    assert sorted(i["file_name"] for i in report.train["images"]) == [
        "Images/1/a.png",
        "Images/1/b.jpg",
        "Images/2/c.JPG",
        "Images/2/d.PNG",
    ]


def test_lowercase_folders_accepted(tmp_path):
    root = make_semantic(tmp_path / "d", MIXED[:2])
    (root / "Images").rename(root / "images")
    (root / "Masks").rename(root / "masks")
    layout, samples, problems = discover(root)
    assert layout == "semantic" and len(samples) == 2 and not problems


def copy_yolo(dest: Path, splits: dict[str, list[str]] | None) -> Path:
    """The bundled YOLO-seg photos, flat (``splits=None``) or spread over split folders."""
    stems = sorted(p.stem for p in (ROBOFLOW / "images").glob("*.jpg"))
    groups = splits or {".": stems}
    for folder, chosen in groups.items():
        for stem in chosen:
            for sub, ext in (("images", ".jpg"), ("labels", ".txt")):
                (dest / folder / sub).mkdir(parents=True, exist_ok=True)
                shutil.copy(ROBOFLOW / sub / f"{stem}{ext}", dest / folder / sub / f"{stem}{ext}")
    return dest


def yolo_nails(stems) -> int:
    return sum(1 for s in stems for line in (ROBOFLOW / "labels" / f"{s}.txt").read_text().splitlines() if line.strip())


@pytest.mark.parametrize("layout", ["flat", "train/valid/test"])
def test_yolo_layouts(tmp_path, layout):
    stems = sorted(p.stem for p in (ROBOFLOW / "images").glob("*.jpg"))
    splits = None if layout == "flat" else {"train": stems[:3], "valid": stems[3:5], "test": stems[5:]}
    root = copy_yolo(tmp_path / "yolo", splits)
    report = convert_dataset(root, valid_fraction=0, workers=1)
    assert report.layout == "yolo" and not report.problems
    assert report.converted == len(stems)
    assert len(report.train["annotations"]) == yolo_nails(stems)  # every polygon is a nail here
    expected_groups = {"default": 6} if splits is None else {k: len(v) for k, v in splits.items()}
    assert report.summary()["groups"] == expected_groups
    assert set(report.manifest["masks"].str.endswith(".txt")) == {True}


# --- bad input ----------------------------------------------------------------------------------


def add_photo_without_mask(root: Path) -> tuple[str, str]:
    write_image(root / "Images" / "1" / "lonely.jpg", photo(40, 60, 9))
    return "Images/1/lonely.jpg", "without a label"


def add_mask_without_photo(root: Path) -> tuple[str, str]:
    write_image(root / "Masks" / "1" / "orphan.png", nail_mask(40, 60, 1))
    return "Masks/1/orphan.png", "without a photo"


def add_size_mismatch(root: Path) -> tuple[str, str]:
    write_image(root / "Images" / "2" / "big.png", photo(50, 60, 9))
    write_image(root / "Masks" / "2" / "big.png", nail_mask(40, 60, 1))
    return "Images/2/big.png", "size mismatch"


def add_unreadable_mask(root: Path) -> tuple[str, str]:
    write_image(root / "Images" / "2" / "garbled.png", photo(40, 60, 9))
    (root / "Masks" / "2").mkdir(parents=True, exist_ok=True)
    (root / "Masks" / "2" / "garbled.png").write_bytes(b"not a png at all")
    return "Images/2/garbled.png", "unreadable"


def add_unreadable_photo(root: Path) -> tuple[str, str]:
    (root / "Images" / "2").mkdir(parents=True, exist_ok=True)
    (root / "Images" / "2" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    write_image(root / "Masks" / "2" / "broken.png", nail_mask(40, 60, 1))
    return "Images/2/broken.jpg", "not a readable image"


def add_empty_mask_file(root: Path) -> tuple[str, str]:
    write_image(root / "Images" / "1" / "zero.png", photo(40, 60, 9))
    (root / "Masks" / "1").mkdir(parents=True, exist_ok=True)
    (root / "Masks" / "1" / "zero.png").write_bytes(b"")
    return "Images/1/zero.png", "empty"


def add_empty_photo_file(root: Path) -> tuple[str, str]:
    (root / "Images" / "1").mkdir(parents=True, exist_ok=True)
    (root / "Images" / "1" / "void.jpg").write_bytes(b"")
    write_image(root / "Masks" / "1" / "void.png", nail_mask(40, 60, 1))
    return "Images/1/void.jpg", "empty"


BAD_INPUT = {
    "photo without mask": add_photo_without_mask,
    "mask without photo": add_mask_without_photo,
    "size mismatch": add_size_mismatch,
    "unreadable mask": add_unreadable_mask,
    "unreadable photo": add_unreadable_photo,
    "0-byte mask": add_empty_mask_file,
    "0-byte photo": add_empty_photo_file,
}


@pytest.mark.parametrize("add_problem", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_reported_by_name_rest_converts(semantic, tmp_path, capsys, add_problem):
    bad_file, message = add_problem(semantic)
    code, summary, err = run_cli(capsys, semantic, "--out", tmp_path / "out", "--valid-fraction", "0", "--workers", "1")
    assert code == 0
    assert [p["file"] for p in summary["problems"]] == [bad_file]
    assert message in summary["problems"][0]["problem"]
    assert bad_file in err
    assert summary["photos"] == len(MIXED) and summary["nails"] == 7  # the good photos all convert
    code, _, err = run_cli(capsys, semantic, "--out", tmp_path / "out", "--strict", "--workers", "1")
    assert code != 0 and "--strict" in err


def test_yolo_odd_coordinates(tmp_path, capsys):
    root = copy_yolo(tmp_path / "yolo", None)
    label = sorted((root / "labels").glob("*.txt"))[0]
    label.write_text(label.read_text() + "0 0.1 0.1 0.2 0.2 0.3\n")
    code, summary, _ = run_cli(capsys, root, "--out", tmp_path / "out", "--valid-fraction", "0", "--workers", "1")
    assert code == 0
    (problem,) = summary["problems"]
    assert problem["file"] == f"images/{label.stem}.jpg" and "even number" in problem["problem"]
    assert summary["photos"] == 5


def test_clean_dataset_strict_exits_zero(semantic, tmp_path, capsys):
    code, summary, _ = run_cli(capsys, semantic, "--out", tmp_path / "out", "--strict", "--workers", "1")
    assert code == 0 and summary["problems"] == [] and summary["photos"] == 4


EMPTY_DATASETS = {
    "empty Images/ and Masks/": lambda r: [(r / d).mkdir(parents=True) for d in ("Images", "Masks")],
    "only unmatched files": lambda r: (add_photo_without_mask(r), add_mask_without_photo(r)),
    "only broken pairs": lambda r: (add_empty_mask_file(r), add_size_mismatch(r)),
}


@pytest.mark.parametrize("build", EMPTY_DATASETS.values(), ids=EMPTY_DATASETS.keys())
def test_nothing_converted_exits_nonzero_and_writes_nothing(tmp_path, capsys, build):
    root = tmp_path / "ds"
    build(root)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, root, "--out", out, "--workers", "1")
    assert code != 0 and "nothing was converted" in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("folder", ["missing", "no layout"])
def test_not_a_dataset_exits_nonzero(tmp_path, capsys, folder):
    root = tmp_path / folder
    if folder == "no layout":
        root.mkdir()
        (root / "readme.txt").write_text("hi")
    code, _, err = run_cli(capsys, root, "--out", tmp_path / "out")
    assert code != 0 and "error" in err


# --- the split ----------------------------------------------------------------------------------


def fake(image: str, group: str = "g", sha1: str | None = None) -> ConvertedSample:
    """A converted sample without files: only the fields the split reads."""
    return ConvertedSample(Sample(image, image + ".png", group, "mask"), sha1=sha1 or f"sha-{image}")


def test_split_empty():
    assert split_samples([], 0.2, 0) == []


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_reproducible_and_stratified(seed):
    samples = [fake(f"a{i}", "a") for i in range(30)] + [fake(f"b{i}", "b") for i in range(10)]
    sides = split_samples(samples, 0.2, seed)
    assert sides == split_samples(samples, 0.2, seed)
    assert sum(s == "valid" for s, x in zip(sides, samples) if x.sample.group == "a") == 6
    assert sum(s == "valid" for s, x in zip(sides, samples) if x.sample.group == "b") == 2


def test_split_depends_on_seed():
    samples = [fake(f"a{i}") for i in range(40)]
    assert len({tuple(split_samples(samples, 0.25, seed)) for seed in range(5)}) > 1


def test_valid_fraction_zero_puts_all_in_train():
    samples = [fake(f"a{i}") for i in range(10)]
    assert split_samples(samples, 0.0, 0) == ["train"] * 10


@pytest.mark.parametrize("seed", range(8))
def test_duplicates_and_roboflow_stems_stay_together(seed):
    samples = [fake(f"x{i}.jpg") for i in range(12)]
    samples += [fake("copy1.jpg", sha1="same"), fake("copy2.jpg", sha1="same"), fake("copy3.jpg", sha1="same")]
    samples += [fake(f"images/8_PNG_jpg.rf.{h}.jpg") for h in ("aa", "bb", "cc", "dd")]
    samples += [fake("chain.jpg", sha1="sha-images/8_PNG_jpg.rf.aa.jpg")]  # duplicate of a stem member
    sides = dict(zip((s.sample.image for s in samples), split_samples(samples, 0.3, seed)))
    assert len({sides[f"copy{i}.jpg"] for i in (1, 2, 3)}) == 1
    assert len({v for k, v in sides.items() if "8_PNG_jpg.rf." in k or k == "chain.jpg"}) == 1


# --- what is written ----------------------------------------------------------------------------


def test_outputs(semantic, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "train.json").write_text("old")
    code, summary, _ = run_cli(capsys, semantic, "--out", out, "--valid-fraction", "0.5", "--workers", "2")
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv", "notes.txt", "train.json", "valid.json"]
    assert (out / "notes.txt").read_text() == "mine"
    train, valid = load_coco(out / "train.json"), load_coco(out / "valid.json")
    assert len(train["images"]) == len(valid["images"]) == 2  # half of each group
    for coco in (train, valid):
        assert coco["info"]["dataset_root"] == str(semantic.resolve())
        for image in coco["images"]:
            assert (semantic / image["file_name"]).is_file()  # file_name is relative to the root
        assert COCO(str(out / "train.json")).getAnnIds()
    import pandas as pd

    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False, dtype={"group": str})
    assert list(manifest.columns)[:6] == ["images", "masks", "width", "height", "group", "split"]
    assert sorted(manifest["images"]) == sorted(i["file_name"] for i in train["images"] + valid["images"])
    assert set(manifest["split"]) == {"train", "valid"} and set(manifest["width"]) == {60}
    assert summary["train"]["nails"] + summary["valid"]["nails"] == 7


def test_valid_fraction_zero_cli(semantic, tmp_path, capsys):
    code, summary, _ = run_cli(capsys, semantic, "--out", tmp_path / "out", "--valid-fraction", "0", "--workers", "1")
    assert code == 0
    assert len(load_coco(tmp_path / "out" / "train.json")["images"]) == 4
    assert load_coco(tmp_path / "out" / "valid.json")["images"] == []
    assert summary["valid"] == {"photos": 0, "nails": 0}


def test_failed_write_leaves_old_file_whole(semantic, tmp_path, monkeypatch):
    """Writes go to a temporary file and are renamed: a failure keeps the old output intact."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.json").write_text("old")
    report = convert_dataset(semantic, workers=1)

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr("nailseg.datasets.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_report(report, out)
    assert sorted(p.name for p in out.iterdir()) == ["train.json"]  # no temporary file left behind
    assert (out / "train.json").read_text() == "old"


def test_workers_give_the_same_output(tmp_path):
    root = make_semantic(tmp_path / "many", [(str(i % 2), f"p{i}", ".png", 1 + i % 3, 255) for i in range(70)])
    one, two = convert_dataset(root, workers=1), convert_dataset(root, workers=2)
    assert one.train == two.train and one.valid == two.valid


# --- it trains: every converted nail reaches the training pipeline -------------------------------


def test_every_instance_reaches_mmdet_training_pipeline(tmp_path):
    """Through configs/mask-rcnn_effilite0_fpn-128_nails.py's train pipeline, per photo, the gt
    masks out of LoadAnnotations equal the annotations written, RLE (ring) instances included."""
    pytest.importorskip("mmdet")
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import nailseg.model  # noqa: F401 - registers the project's modules
    from nailseg.paths import DEFAULT_CONFIG
    from nailseg.train import build_config

    root = make_semantic(tmp_path / "ds", MIXED)
    ring_mask = np.zeros((40, 60), np.uint8)
    cv2.circle(ring_mask, (30, 20), 15, 255, thickness=-1)
    cv2.circle(ring_mask, (30, 20), 6, 0, thickness=-1)
    write_image(root / "Images" / "1" / "ring.png", photo(40, 60, 5))
    write_image(root / "Masks" / "1" / "ring.png", ring_mask)
    out = tmp_path / "coco"
    save_report(convert_dataset(root, valid_fraction=0, workers=1), out)
    written = load_coco(out / "train.json")
    assert any(isinstance(a["segmentation"], dict) for a in written["annotations"]), "needs an RLE nail"
    expected = {i["id"]: 0 for i in written["images"]}
    for ann in written["annotations"]:
        expected[ann["image_id"]] += 1

    cfg = build_config(DEFAULT_CONFIG, data=out, work_dir=tmp_path / "work")
    init_default_scope("mmdet")
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    steps = dataset.pipeline.transforms
    upto = next(i for i, t in enumerate(steps) if type(t).__name__ == "LoadAnnotations") + 1
    assert steps[upto - 1].poly2mask, "RLE nails are dropped without poly2mask=True"
    seen = {}
    for index in range(len(dataset)):
        results = dataset.get_data_info(index)
        for step in steps[:upto]:
            results = step(results)
        seen[results["img_id"]] = len(results["gt_masks"])
        assert all(m.any() for m in results["gt_masks"].masks)
        assert len(results["gt_bboxes"]) == len(results["gt_masks"])
    assert seen == expected
