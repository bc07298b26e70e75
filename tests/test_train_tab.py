"""Train tab: its views of a job's status, its input checks, and a real run through its handlers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import pytest

import nailseg.serving
from nailseg.jobs import JobStatus, TrainingJobs
from nailseg.tabs import train as tab

REPO = Path(__file__).resolve().parent.parent
TINY_DATA = REPO / "tests" / "data" / "nails-roboflow"

RUNNING = JobStatus(state="running", work_dir="/w/run", iter=20, max_iters=80, eta_s=3725.0,
                    losses=[(10, 2.5), (20, 2.0)], log_tail=["a", "b"])  # fmt: skip
FINISHED = JobStatus(state="finished", work_dir="/w/run", returncode=0, iter=80, max_iters=80,
                     metrics={"coco/bbox_mAP": 0.5, "coco/segm_mAP": 0.4567},
                     checkpoint="/w/run/iter_80.pth")  # fmt: skip


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
    assert tab.data_choices((tmp_path, tmp_path / "absent")) == [str(tmp_path / "new"), str(tmp_path / "old")]
    assert tab.data_choices(()) == []


@pytest.mark.parametrize(
    ("data", "overrides", "message"),
    [
        ("", "", "no train.json"),
        ("/nonexistent", "", "no train.json"),
        (str(TINY_DATA), "", "no train.json"),  # a dataset not converted yet
        ("CONVERTED", "train_cfg.max_iters", "KEY=VALUE"),
        ("CONVERTED", "a='unclosed", "config overrides"),
    ],
)
def test_start_refuses_bad_input(tmp_path, monkeypatch, data, overrides, message):
    monkeypatch.setattr(tab, "JOBS", TrainingJobs(tmp_path / "jobs"))
    (tmp_path / "train.json").write_text("{}")
    data = str(tmp_path) if data == "CONVERTED" else data
    with pytest.raises(gr.Error, match=message):
        tab.start(next(iter(tab.CONFIGS)), data, None, 2, None, overrides)
    assert tab.JOBS.status().state == "idle"


def test_export_refuses_without_a_finished_run():
    with pytest.raises(gr.Error, match="no finished training"):
        tab.export_checkpoint(JobStatus())
    with pytest.raises(gr.Error, match="no finished training"):
        tab.export_checkpoint(RUNNING)


@pytest.mark.slow
def test_train_export_and_use_through_the_tab(tmp_path, monkeypatch):
    """One epoch on 4 photos (2 iterations), then the zip download and "use this model" (~1 min)."""
    from nailseg.images import load_image_rgb

    data = tmp_path / "tiny"
    subprocess.run([sys.executable, "-m", "nailseg", "convert", str(TINY_DATA), "--out", str(data),
                    "--valid-fraction", "0.34", "--workers", "1"], check=True, capture_output=True)  # fmt: skip
    monkeypatch.setattr(tab, "JOBS", TrainingJobs(tmp_path / "jobs"))
    monkeypatch.setattr(nailseg.serving, "STORE", nailseg.serving.ModelStore())
    view = tab.start(next(iter(tab.CONFIGS)), str(data), 1, 2, None, "default_hooks.logger.interval=1")
    assert "running" in view[0]
    deadline = time.monotonic() + 600
    while tab.JOBS.status().running and time.monotonic() < deadline:
        time.sleep(2)
    progress, summary, curve, log, start_btn, stop_btn, finished = tab.poll()
    assert "finished: iteration 2 / 2" in progress, log
    assert "Validation AP" in summary
    assert list(curve["iter"]) == [1, 2]
    assert finished["visible"] is True and start_btn["interactive"] is True

    import zipfile

    archive = tab.download()
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["mask-rcnn_effilite0_fpn-128_nails.py",
                                                           "mask-rcnn_effilite0_fpn-128_nails.safetensors"]  # fmt: skip
    message = tab.use_model()
    assert "export/mask-rcnn_effilite0_fpn-128_nails.safetensors" in message
    model = nailseg.serving.STORE.current
    assert model.weights.source.endswith("export/mask-rcnn_effilite0_fpn-128_nails.safetensors")
    photo = load_image_rgb(sorted((TINY_DATA / "images").glob("*.jpg"))[0])
    nails = model.predict(photo, 0.0)
    assert nails.masks.shape[1:] == photo.shape[:2]
