"""The app's pure parts, without a server: archive safety, crop options, upload clean-up, weights switch."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from app_support import PHOTOS, bomb_zip, dataset_zip

from nailseg.result import Nails
from nailseg.serving import ModelStore
from nailseg.tabs import dataset, segment
from nailseg.weights import WeightsError


def member(name: str, size: int = 10, compressed: int | None = None, mode: int = stat.S_IFREG | 0o644):
    info = zipfile.ZipInfo(name)
    info.file_size, info.compress_size = size, size if compressed is None else compressed
    info.external_attr = mode << 16
    return info


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([], None),
        ([member("nails/images/a.jpg"), member("nails/labels/a.txt"), member("nails/", mode=stat.S_IFDIR | 0o755)],
         None),
        ([member("a.jpg", mode=0), member("b.jpg", mode=0o600)], None),  # no Unix file type recorded
        ([member("/etc/passwd")], "absolute path"),
        ([member("C:/Windows/a.jpg")], "absolute path"),
        ([member("images/../../evil.txt")], "'..'"),
        ([member("images\\..\\evil.txt")], "'..'"),
        ([member("images/link.jpg", mode=stat.S_IFLNK | 0o777)], "link in the zip"),
        ([member("images/fifo", mode=stat.S_IFIFO | 0o644)], "special file"),
        ([member(f"images/{k}.jpg") for k in range(11)], "too many files"),
        ([member("a.jpg", size=dataset.RATIO_FROM_BYTES + 1)] * 2, "unpacks to more than"),
        ([member("images/zeros.png", size=dataset.RATIO_FROM_BYTES, compressed=1000)], "zip bomb"),
        ([member("images/big.png", size=dataset.RATIO_FROM_BYTES, compressed=dataset.RATIO_FROM_BYTES // 2)], None),
    ],
    ids=["empty", "dataset", "no-mode", "absolute", "drive", "dotdot", "backslash", "symlink", "fifo", "count",
         "total", "bomb", "big-but-honest"],
)  # fmt: skip
def test_check_archive(members, reason):
    limits = {"max_members": 10, "max_total_bytes": 2 * dataset.RATIO_FROM_BYTES}
    if reason is None:
        dataset.check_archive(members, **limits)
    else:
        with pytest.raises(dataset.UnsafeArchive, match=reason):
            dataset.check_archive(members, **limits)


def test_extract_archive_unwraps_the_top_folder(tmp_path):
    archive = dataset_zip(tmp_path / "d.zip", PHOTOS[:2], wrap="mydata")
    root = dataset.extract_archive(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "mydata"
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted(p.name for p in PHOTOS[:2])


def test_extract_archive_refuses_a_bomb_before_writing(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(dataset.UnsafeArchive, match="zip bomb"):
        dataset.extract_archive(bomb_zip(tmp_path / "bomb.zip", mib=60), tmp_path / "out")
    assert list((tmp_path / "out").rglob("*")) == []


def test_extract_archive_refuses_a_non_zip(tmp_path):
    (tmp_path / "x.zip").write_text("not a zip")
    with pytest.raises(dataset.UnsafeArchive, match="not a readable zip"):
        dataset.extract_archive(tmp_path / "x.zip", tmp_path)


def test_coco_nails_round_trip(tmp_path):
    from nailseg.datasets import convert_dataset

    report = convert_dataset(dataset.extract_archive(dataset_zip(tmp_path / "d.zip", PHOTOS[:3]), tmp_path / "x"),
                             valid_fraction=0, workers=1)  # fmt: skip
    for image in report.train["images"]:
        nails = dataset.coco_nails(report.train, image)
        anns = [a for a in report.train["annotations"] if a["image_id"] == image["id"]]
        assert nails.image_size == (image["height"], image["width"])
        assert sorted(nails.areas.tolist()) == sorted(a["area"] for a in anns)


@pytest.mark.parametrize(
    ("args", "expected"),
    [((0.1, True, 224, "kept"), (0.1, True, 224, False)), ((0, False, 0, "masked out"), (0.0, False, None, True)),
     ((0.2, False, None, "kept"), (0.2, False, None, False))],
)  # fmt: skip
def test_crop_options(args, expected):
    opts = segment.crop_options(*args)
    assert (opts.margin, opts.square, opts.size, opts.mask_background) == expected


def test_forget_upload_deletes_only_uploads(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    upload, own = tmp_path / "gradio" / "abc" / "photo.jpg", tmp_path / "mine.jpg"
    upload.parent.mkdir(parents=True)
    for path in (upload, own):
        path.write_bytes(b"x")
    segment.forget_upload(str(upload))
    segment.forget_upload(str(own))
    assert not upload.exists() and own.exists()


def test_render_without_nails_says_so():
    result = segment.Detections("blank", np.zeros((40, 60, 3), np.uint8), Nails.empty(40, 60), 0.5, 0.01, "test")
    overlay, rows, records, gallery, zip_path, status = segment.render(result, 0.5, segment.crop_options(
        0.1, True, 224, "kept"))  # fmt: skip
    assert "No nails found" in status and rows == records == gallery == []
    assert overlay.shape == (40, 60, 3)
    assert set(zipfile.ZipFile(zip_path).namelist()) == {"blank_overlay.png", "masks/blank_all.png",
                                                         "predictions.json"}  # fmt: skip


def test_switch_to_missing_weights_is_an_error(tmp_path):
    store = ModelStore()
    with pytest.raises(WeightsError, match="not found"):
        store.switch(str(tmp_path / "nope.safetensors"))
    with pytest.raises(WeightsError, match="give a local weights path"):
        store.switch("  ")


def test_hub_unreachable_falls_back_to_the_bundled_model_with_a_notice(monkeypatch):
    from app_support import weights_spec

    from nailseg import serving, weights

    def offline(spec, filename):
        raise weights.HubUnreachable(f"cannot reach the Hugging Face Hub for {spec.repo_id}/{filename}")

    monkeypatch.setattr(weights, "_download", offline)  # the network layer only; the model load is real
    monkeypatch.setattr(serving, "BUNDLED_WEIGHTS", Path(weights_spec()))
    store = ModelStore("hf://someone/nails/model.safetensors")
    assert store.current.weights.source == weights_spec()
    assert store.notice.startswith("Hub unreachable") and "using the bundled model" in store.notice
    message = store.switch("hf://someone/nails@v2/model.safetensors")
    assert "using the bundled model" in message and weights_spec() in message
