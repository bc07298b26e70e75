"""The command line's error boundary (issue 27, rows 4 and 5): a user's mistake is one line on
stderr naming the argument or the file, exit status 2, no traceback, and nothing lost or written.

Each case runs ``nailseg`` in this process: an exception that escaped the boundary fails the test
with its traceback, as it would have reached the user.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import DATA, PHOTOS, convert_test_photos, fake_checkpoint

from nailseg import cli


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The test photos converted (train.json, valid.json): what `train` and `evaluate` read."""
    return convert_test_photos(tmp_path_factory.mktemp("data"))


def refused(capsys, argv: list, *fragments: str) -> str:
    """Run ``nailseg ARGV``; assert exit 2 and one ``error:`` line holding every fragment."""
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("problem: ")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def a_file(tmp_path: Path, name: str = "taken.txt") -> Path:
    path = tmp_path / name
    path.write_text("not a folder")
    return path


# --- row 4: data never lost ---------------------------------------------------------------------


def test_export_onto_its_own_checkpoint_is_refused_and_the_checkpoint_kept(tmp_path, capsys):
    (tmp_path / "W").mkdir()
    checkpoint = fake_checkpoint(tmp_path / "W" / "iter_1.pth")
    before = checkpoint.read_bytes()
    refused(capsys, ["export", checkpoint, "--out", checkpoint], "must be a .safetensors file", "iter_1.pth")
    named_like_weights = checkpoint.rename(tmp_path / "W" / "iter_1.safetensors")
    refused(capsys, ["export", named_like_weights, "--out", named_like_weights], "is the checkpoint being exported")
    assert named_like_weights.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "W").iterdir()) == ["iter_1.safetensors"]


def test_export_into_a_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    checkpoint = fake_checkpoint(tmp_path / "iter_1.pth")
    folder = tmp_path / "out.safetensors"
    folder.mkdir()
    refused(capsys, ["export", checkpoint, "--out", folder], "is a folder")
    refused(capsys, ["export", checkpoint, "--out", tmp_path], "must be a .safetensors file")
    assert not list(folder.iterdir()) and not (tmp_path / "out.json").exists()
    refused(capsys, ["export", checkpoint, "--out", a_file(tmp_path) / "w.safetensors"], "taken.txt is a file")


@pytest.mark.parametrize("dump", ["folder", "under a file"])
def test_evaluate_checks_its_dump_before_the_evaluation(data, tmp_path, capsys, monkeypatch, dump):
    import nailseg.evaluate

    def evaluation_lost(*args, **kwargs):
        raise AssertionError("the evaluation ran although its results could not be written")

    monkeypatch.setattr(nailseg.evaluate, "evaluate_dataset", evaluation_lost)
    target = tmp_path if dump == "folder" else a_file(tmp_path) / "results.json"
    argv = ["evaluate", "--ann-file", data / "valid.json", "--img-dir", DATA, "--dump", target]
    refused(capsys, argv, "--dump", "is a folder" if dump == "folder" else "taken.txt is a file")


# --- row 5: tracebacks become messages ------------------------------------------------------------


def test_convert_out_must_be_a_writable_folder(tmp_path, capsys):
    taken = a_file(tmp_path)
    refused(capsys, ["convert", DATA, "--out", taken, "--workers", "1"], "--out", "taken.txt is a file")
    refused(capsys, ["convert", DATA, "--out", taken / "coco", "--workers", "1"], "--out", "taken.txt is a file")


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    """Read-only: refused up front where the process cannot write (not as root), and a refusal
    while writing is one line too."""
    import nailseg.datasets

    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    if os.geteuid() != 0:
        refused(capsys, ["convert", DATA, "--out", read_only / "coco", "--workers", "1"], "--out", "not writable")

    def denied(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(nailseg.datasets, "write_atomic", denied)
    refused(capsys, ["convert", DATA, "--out", tmp_path / "coco", "--workers", "1"], "train.json: Permission denied")


PREDICT_REFUSALS = {
    "crop size -5": (["--crop-size", "-5"], "--crop-size must be in [1, 2048], got -5"),
    "crop size 40000": (["--crop-size", "40000"], "--crop-size must be in [1, 2048], got 40000"),
    "margin -1": (["--margin", "-1"], "--margin must be in [0, 1], got -1.0"),
    "margin nan": (["--margin", "nan"], "--margin must be in [0, 1], got nan"),
    "score threshold inf": (["--score-thr", "inf"], "--score-thr must be in [0, 1], got inf"),
}


@pytest.mark.parametrize("extra, message", PREDICT_REFUSALS.values(), ids=PREDICT_REFUSALS.keys())
def test_predict_numbers_are_checked(tmp_path, capsys, extra, message):
    refused(capsys, ["predict", PHOTOS[0], "--out", tmp_path / "out", *extra], message)
    assert not (tmp_path / "out").exists()


def test_predict_out_a_file(tmp_path, capsys):
    refused(capsys, ["predict", PHOTOS[0], "--out", a_file(tmp_path)], "--out", "taken.txt is a file")


def test_predict_says_a_missing_photo_is_not_found(tmp_path, capsys):
    """Named on the command line, it is tried with the others and listed (exit 1 when none could be read)."""
    assert cli.main(["predict", str(tmp_path / "gone.jpg"), str(PHOTOS[0]), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"problem: {tmp_path / 'gone.jpg'}: not found" in err and "no longer on the server" not in err


@pytest.mark.parametrize("content", ['{"not": "a list"}', '[{"file_name": 3}]', "[1, 2]", "NaN", "{"])
def test_predict_resume_over_a_predictions_file_of_the_wrong_shape(tmp_path, capsys, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.json").write_text(content)
    refused(capsys, ["predict", PHOTOS[0], "--out", out, "--resume"], str(out / "predictions.json"))


GROUND_TRUTHS = {
    "[]": ("[]", "is not a COCO file"),
    "deeply nested": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "not JSON": ("{'images': []}", "is not standard JSON"),
    "NaN in it": ('{"images": [], "annotations": [], "categories": [], "x": NaN}', "NaN is not a JSON number"),
    "no categories": ('{"images": [], "annotations": []}', "categories must be a list of objects"),
}


@pytest.mark.parametrize("content, message", GROUND_TRUTHS.values(), ids=GROUND_TRUTHS.keys())
def test_evaluate_on_a_ground_truth_of_the_wrong_shape(tmp_path, capsys, content, message):
    gt = tmp_path / "gt.json"
    gt.write_text(content)
    refused(capsys, ["evaluate", "--ann-file", gt, "--img-dir", DATA], "gt.json", message)


def test_evaluate_on_a_folder_or_a_missing_photo_folder(data, tmp_path, capsys):
    refused(capsys, ["evaluate", "--ann-file", tmp_path, "--img-dir", DATA], str(tmp_path), "Is a directory")
    refused(capsys, ["evaluate", "--ann-file", data / "valid.json", "--img-dir", tmp_path / "no"], "--img-dir")
    refused(capsys, ["evaluate", "--ann-file", data / "valid.json", "--img-dir", tmp_path], "photo(s) of the ground")


def test_train_work_dir_a_file(data, tmp_path, capsys):
    refused(capsys, ["train", "--data", data, "--work-dir", a_file(tmp_path)], "--work-dir", "taken.txt is a file")


def test_train_on_a_train_json_of_the_wrong_shape(data, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    coco = json.loads((data / "train.json").read_text())
    coco["annotations"][0]["segmentation"] = [[0.5, "x", 3, 4, 5, 6]]
    (broken / "train.json").write_text(json.dumps(coco))
    refused(capsys, ["train", "--data", broken], "train.json: annotations[0].segmentation must be polygons")
    (broken / "train.json").write_text('{"images": {}}')
    refused(capsys, ["train", "--data", broken], "train.json: images must be a list of objects")


@pytest.mark.parametrize("lr", ["inf", "nan", "0", "5"])
def test_train_learning_rate_finite_and_in_range(data, capsys, lr):
    refused(capsys, ["train", "--data", data, "--lr", lr], "learning rate must be")


class Boom:
    """What a hostile pickle carries: unpickling it would run os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_train_load_from_a_pickle_is_a_clear_message(data, tmp_path, capsys):
    import torch

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": Boom(tmp_path / "MARKER")}, evil)
    argv = ["train", "--data", data, "--work-dir", tmp_path / "w", "--load-from", evil]
    line = refused(capsys, argv, "evil.pth is not a weights-only mmengine checkpoint")
    assert "weights_only=False" not in line and not (tmp_path / "MARKER").exists()


# --- predict saves what it did on SIGTERM ---------------------------------------------------------


def test_predict_saves_its_index_on_sigterm(tmp_path):
    """SIGTERM halfway: the photos done are in predictions.json, and --resume skips them."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(8):  # many more than are done when the signal comes
        for photo in PHOTOS:
            (photos / f"{k}-{photo.name}").write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.Popen(
        [sys.executable, "-m", "nailseg", "predict", str(photos), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 300
    while "nail(s)" not in run.stdout.readline():  # the first photo is done
        assert run.poll() is None and time.monotonic() < deadline, "predict ended before a photo was done"
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=120) == 128 + signal.SIGTERM  # stopped halfway, not finished
    done = {r["file_name"] for r in json.loads((out / "predictions.json").read_text())}
    assert 1 <= len(done) < 8 * len(PHOTOS)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.02", 0.02),
        ("3", 3),
        ("True", True),
        ("None", None),
        ("[1, 2]", [1, 2]),
        ("(1, 2)", (1, 2)),
        ("1,2", [1, 2]),
        ("a,b", ["a", "b"]),
        ("resnet", "resnet"),
        ("__import__('os').system('true')", "__import__('os').system('true')"),  # text, never run
    ],
)
def test_cfg_options_values_are_read_as_mmdet_reads_them_without_running_them(text, value):
    """What mmengine's private DictAction._parse_iterable gave, from our own reader."""
    from nailseg.cli import option_value

    assert option_value(text) == value
