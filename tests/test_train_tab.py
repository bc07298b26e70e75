"""Train tab: its views of a job's status, its input checks, and a real run through its handlers."""

from __future__ import annotations

import json
import os
import time

import gradio as gr
import pytest
from support import DATA as TINY_DATA
from support import convert_test_photos

from nailseg.evaluate import SWEEP
from nailseg.jobs import JobStatus, TrainingJobs
from nailseg.serving import ModelStore
from nailseg.tabs import train as tab

OWNER = {"request": None, "profile": None}  # a private server: whoever opens the page is its owner


@pytest.fixture(autouse=True)
def private_server(monkeypatch):
    for var in ("SPACE_ID", "GRADIO_SERVER_NAME", "NAILSEG_AUTH", "OAUTH_CLIENT_ID"):
        monkeypatch.delenv(var, raising=False)


RUNNING = JobStatus(
    state="running",
    work_dir="/w/run",
    iter=20,
    max_iters=80,
    eta_s=3725.0,
    losses=[(10, 2.5), (20, 2.0)],
    log_tail=["a", "b"],
)
FINISHED = JobStatus(
    state="finished",
    work_dir="/w/run",
    returncode=0,
    iter=80,
    max_iters=80,
    metrics={"coco/bbox_mAP": 0.5, "coco/segm_mAP": 0.4567},
    checkpoint="/w/run/iter_80.pth",
)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (JobStatus(), ["No training yet.", "width:0.0%"]),
        (JobStatus(state="running", work_dir="/w"), ["starting", "width:0.0%"]),
        (RUNNING, ["iteration 20 / 80", "ETA 1:02:05", "width:25.0%"]),
        (FINISHED, ["finished: iteration 80 / 80", "width:100.0%"]),
        (JobStatus(state="failed", work_dir="/w", returncode=1), ["failed"]),
    ],
)
def test_progress_html(status, expected):
    html = tab.progress_html(status)
    assert all(part in html for part in expected), html
    assert "ETA" not in html or status.running


def test_summary_markdown():
    assert tab.summary_markdown(JobStatus()) == ""
    text = tab.summary_markdown(FINISHED)
    assert "**finished**" in text and "segm_mAP 0.457" in text and "bbox_mAP 0.500" in text
    assert "iter_80.pth" in text
    failed = tab.summary_markdown(JobStatus(state="failed", work_dir="/w", returncode=2))
    assert "exited with code 2" in failed and "AP" not in failed


@pytest.mark.parametrize(("status", "rows"), [(JobStatus(), 0), (RUNNING, 2)])
def test_loss_frame(status, rows):
    frame = tab.loss_frame(status)
    assert list(frame.columns) == ["iter", "loss"] and len(frame) == rows


def test_data_choices_lists_converted_folders_newest_first(tmp_path):
    for i, name in enumerate(["old", "new"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.json").write_text("{}")
        os.utime(tmp_path / name / "train.json", (1000 + i, 1000 + i))
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    (tmp_path / "not-converted").mkdir()
    found = tab.data_choices((tmp_path, tmp_path / "absent"))
    assert list(found) == ["new", "old"] and found["new"] == tmp_path / "new"
    assert tab.data_choices(()) == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        (
            "train_cfg.max_iters=100 optim_wrapper.optimizer.lr=0.005",
            ("train_cfg.max_iters=100", "optim_wrapper.optimizer.lr=0.005"),
        ),
        ("train_cfg.max_iters=1e2", ("train_cfg.max_iters=100",)),
    ],
)
def test_overrides_allowed(text, expected):
    assert tab.parse_overrides(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train_cfg.max_iters", "KEY=VALUE"),
        ("a='unclosed", "Config overrides"),
        ("load_from=/tmp/evil.pth", "KEY=VALUE with KEY one of"),  # a path: never from the form
        ("custom_imports.imports=['os']", "KEY=VALUE with KEY one of"),
        ("work_dir=/etc", "KEY=VALUE with KEY one of"),
        ("train_cfg.max_iters=-5", "from 1 to"),
        ("train_cfg.max_iters=nan", "from 1 to"),
        ("train_cfg.max_iters=2.5", "whole number"),
        ("optim_wrapper.optimizer.lr=__import__('os')", "from 1e-07 to 1"),
    ],
)
def test_overrides_refused(text, message):
    with pytest.raises(gr.Error, match=message):
        tab.parse_overrides(text)


@pytest.mark.parametrize(
    ("data", "start_from", "message"),
    [
        ("", None, "Pick a converted dataset"),
        ("/nonexistent", None, "Pick a converted dataset"),
        (str(TINY_DATA), None, "Pick a converted dataset"),  # a path is never taken from the form
        ("CONVERTED", "/tmp/evil.pth", "Pick the weights to start from"),
    ],
)
def test_start_refuses_bad_input(tmp_path, monkeypatch, data, start_from, message):
    on = tab.TrainHandlers(ModelStore(), TrainingJobs(tmp_path / "jobs"))
    monkeypatch.setattr(tab, "data_roots", lambda: (tmp_path / "converted",))
    (tmp_path / "converted" / "mine").mkdir(parents=True)
    (tmp_path / "converted" / "mine" / "train.json").write_text("{}")
    data = "mine" if data == "CONVERTED" else data
    with pytest.raises(gr.Error, match=message):
        on.start(next(iter(tab.CONFIGS)), data, start_from, None, 2, None, "", **OWNER)
    assert on.jobs.status().state == "idle"


def test_export_refuses_without_a_finished_run():
    with pytest.raises(gr.Error, match="No finished training"):
        tab.export_checkpoint(JobStatus())
    with pytest.raises(gr.Error, match="No finished training"):
        tab.export_checkpoint(RUNNING)


@pytest.mark.slow
def test_train_export_and_use_through_the_tab(tmp_path, monkeypatch):
    """One epoch on 4 photos (2 iterations), then the zip download and "use this model" (~1 min)."""
    from nailseg.images import load_image_rgb

    data = tmp_path / "tiny"
    convert_test_photos(data)
    on = tab.TrainHandlers(ModelStore(), TrainingJobs(tmp_path / "jobs"))
    monkeypatch.setattr(tab, "data_roots", lambda: (tmp_path,))
    view = on.start(
        next(iter(tab.CONFIGS)), "tiny", tab.FROM_BUNDLED, 1, 2, None, "default_hooks.logger.interval=1", **OWNER
    )
    assert "running" in view[0]
    deadline = time.monotonic() + 600
    while on.jobs.status().running and time.monotonic() < deadline:
        time.sleep(2)
    progress, summary, curve, log, start_btn, stop_btn, finished = on.poll(**OWNER)
    assert "finished: iteration 2 / 2" in progress, log
    assert "Validation AP" in summary
    assert list(curve["iter"]) == [1, 2]
    assert finished["visible"] is True and start_btn["interactive"] is True

    import zipfile

    assert "--load-from" in on.jobs.status().argv  # it started from the bundled model
    archive = on.download(**OWNER)
    assert sorted(zipfile.ZipFile(archive).namelist()) == [
        "mask-rcnn_effilite0_fpn-128_nails.json",
        "mask-rcnn_effilite0_fpn-128_nails.safetensors",
    ]
    assert any(label.startswith("run ") for label in on.start_choices())  # the next run may start from it
    # The export's default threshold was chosen by F1 on the run's validation photos, not guessed.
    config = json.loads(zipfile.ZipFile(archive).read("mask-rcnn_effilite0_fpn-128_nails.json"))
    chosen = config["model"]["test_cfg"]["rcnn"]["default_score_thr"]
    assert chosen in SWEEP
    message = on.use_model(**OWNER)
    assert "mask-rcnn_effilite0_fpn-128_nails.safetensors" in message
    assert f"default score threshold {chosen:g}" in message
    model = on.store.current
    assert model.weights.source.endswith("export/mask-rcnn_effilite0_fpn-128_nails.safetensors")
    photo = load_image_rgb(sorted((TINY_DATA / "images").glob("*.jpg"))[0])
    nails = model.predict(photo, 0.0)
    assert nails.masks.shape[1:] == photo.shape[:2]
