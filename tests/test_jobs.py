"""Training jobs: the log/scalars parsers on sample text, and real CPU trainings through the runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import convert_test_photos

from nailseg.jobs import (
    EXIT_NAME,
    LOG_NAME,
    JobError,
    JobStatus,
    TrainingJobs,
    TrainRequest,
    newest_checkpoint,
    parse_eta,
    parse_loop,
    parse_progress,
    parse_records,
    parse_scalars,
    read_run,
    scalars_text,
    tail_lines,
)

ITER_LOG = """\
2026/11/26 07:04:46 - mmengine - INFO - Checkpoints will be saved to /w.
2026/11/26 07:05:10 - mmengine - INFO - Iter(train) [  10/1800]  lr: 6.9799e-04  eta: 1:13:20  loss: 2.8367
2026/11/26 07:05:36 - mmengine - INFO - Iter(train) [  20/1800]  lr: 1.3624e-03  eta: 1:14:33  loss: 2.2583
2026/11/26 07:05:40 - mmengine - INFO - Saving checkpoint at 20 iterations
"""
EPOCH_LOG = """\
11/26 07:05:10 - mmengine - INFO - Epoch(train)  [3][ 50/270]  lr: 2.0000e-02  eta: 1 day, 2:03:04  loss: 1.1
11/26 07:05:40 - mmengine - INFO - Epoch(val) [3][10/10]    coco/bbox_mAP: 0.5000
"""


@pytest.mark.parametrize(
    ("line", "seconds"),
    [
        ("Iter(train) [10/1800]  eta: 1:13:20  time: 2.4", 4400.0),
        ("eta: 0:00:00  time: 1", 0.0),
        ("eta: 2 days, 0:00:01 ", 2 * 86400 + 1.0),
        ("eta: 1 day, 10:00:00", 34 * 3600.0),
        ("no estimate here", None),
        ("", None),
    ],
)
def test_parse_eta(line, seconds):
    assert parse_eta(line) == seconds


@pytest.mark.parametrize(
    ("text", "max_epochs", "expected"),
    [
        (ITER_LOG, None, (20, 1800, 4473.0)),
        (EPOCH_LOG, 12, (2 * 270 + 50, 12 * 270, 93784.0)),
        (EPOCH_LOG, None, (590, None, 93784.0)),
        ("loading annotations into memory...\nTraceback (most recent call last):\n", None, (0, None, None)),
        ("", None, (0, None, None)),
    ],
)
def test_parse_progress(text, max_epochs, expected):
    assert parse_progress(text, max_epochs) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "model = dict(\n    train_cfg=dict(rpn=dict()))\n"
            "train_cfg = dict(max_iters=1800, type='IterBasedTrainLoop', val_interval=1800)\n",
            (1800, None),
        ),
        ("train_cfg = dict(max_epochs=12, type='EpochBasedTrainLoop', val_interval=1)\n", (None, 12)),
        ("model = dict(train_cfg=dict(max_iters=5))\n", (None, None)),  # only the nested one
        ("", (None, None)),
    ],
)
def test_parse_loop(text, expected):
    assert parse_loop(text) == expected


def test_parse_scalars_losses_and_last_validation():
    lines = [
        {"lr": 0.001, "loss": 2.5, "loss_mask": 1.0, "iter": 10, "step": 10},
        {"lr": 0.001, "loss": 2.0, "iter": 20, "step": 20},
        {"coco/bbox_mAP": 0.1, "coco/segm_mAP": 0.05, "data_time": 0.1, "step": 20},
        {"lr": 0.001, "loss": 1.5, "iter": 30, "step": 30},
        {"coco/bbox_mAP": 0.4, "coco/bbox_mAP_50": 0.8, "coco/segm_mAP": 0.35, "step": 30},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"loss": 1.4, "it'  # a line being written
    losses, metrics = parse_scalars(text)
    assert losses == [(10, 2.5), (20, 2.0), (30, 1.5)]
    assert metrics == {"coco/bbox_mAP": 0.4, "coco/bbox_mAP_50": 0.8, "coco/segm_mAP": 0.35}


@pytest.mark.parametrize("text", ["", "\n\n", "not json\n[1, 2]\n", '{"lr": 0.1}'])
def test_parse_scalars_empty_and_malformed(text):
    assert parse_scalars(text) == ([], {})


def test_a_resumed_run_s_records_follow_the_first_run_s(tmp_path):
    # Each start of mmengine (a resume too) writes a new <timestamp>/vis_data/scalars.json.
    for stamp, records in (
        ("20261127_072348", [{"loss": 0.6, "iter": 740}]),
        ("20261127_071744", [{"loss": 0.7, "iter": 10}]),
    ):
        (tmp_path / stamp / "vis_data").mkdir(parents=True)
        (tmp_path / stamp / "vis_data" / "scalars.json").write_text("\n".join(map(json.dumps, records)) + "\n")
    assert [r["iter"] for r in parse_records(scalars_text(tmp_path))] == [10, 740]
    assert read_run(tmp_path)["losses"] == [(10, 0.7), (740, 0.6)]
    assert scalars_text(tmp_path / "missing") == ""


def test_tail_lines_collapses_progress_bars():
    text = "a\n\nb\r[>>  ] 1/4\r[>>>>] 4/4\nc\n"
    assert tail_lines(text, 2) == ["[>>>>] 4/4", "c"]
    assert tail_lines(text, 0) == []
    assert tail_lines("", 5) == []


def test_request_argv_carries_only_what_was_set():
    bare = TrainRequest(data="/d", work_dir="/w").argv(python="py")
    assert bare == ["py", "-m", "nailseg", "train", "--data", "/d", "--work-dir", "/w"]
    full = TrainRequest(
        data="/d", work_dir="/w", config="c.py", epochs=3, batch_size=2, lr=0.02, cfg_options=("a.b=1",)
    ).argv(python="py")
    assert full[4:] == [
        "c.py",
        "--data",
        "/d",
        "--work-dir",
        "/w",
        "--epochs",
        "3",
        "--batch-size",
        "2",
        "--lr",
        "0.02",
        "--cfg-options",
        "a.b=1",
    ]


def test_newest_checkpoint_prefers_last_checkpoint(tmp_path):
    assert newest_checkpoint(tmp_path) is None
    for name in ("iter_2.pth", "iter_4.pth"):
        (tmp_path / name).write_bytes(b"x")
    os.utime(tmp_path / "iter_2.pth", (time.time() + 10, time.time() + 10))
    assert newest_checkpoint(tmp_path) == tmp_path / "iter_2.pth"  # newest by time
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_4.pth"))
    assert newest_checkpoint(tmp_path) == tmp_path / "iter_4.pth"


def test_status_of_a_recorded_job_from_its_files(tmp_path):
    """A job recorded by another app process, ended while nobody watched: read from files alone."""
    jobs = TrainingJobs(tmp_path)
    assert jobs.status() == JobStatus()
    work = tmp_path / "run"
    (work / "20260101_000000" / "vis_data").mkdir(parents=True)
    (work / LOG_NAME).write_text(ITER_LOG)
    (work / "20260101_000000" / "vis_data" / "scalars.json").write_text('{"loss": 2.0, "iter": 20}\n')
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    state = {"pid": int(dead.stdout), "argv": ["x"], "work_dir": str(work), "started": 0, "stop_requested": False}
    (tmp_path / "train_job.json").write_text(json.dumps(state))
    status = jobs.status()
    assert (status.state, status.iter, status.max_iters, status.losses) == ("failed", 20, 1800, [(20, 2.0)])
    (work / EXIT_NAME).write_text("0\n")
    finished = jobs.status()
    assert (finished.state, finished.returncode, finished.fraction) == ("finished", 0, 1.0)
    assert jobs.stop().state == "finished"  # nothing to stop


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    convert_test_photos(out)
    return out


def _wait(jobs: TrainingJobs, until, timeout: float) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = jobs.status()
        if until(status):
            return status
        time.sleep(1)
    raise AssertionError(f"timed out; last status: {status.state}, log: {status.log_tail[-5:]}")


@pytest.mark.slow
def test_real_training_runs_to_the_end(tiny_data, tmp_path):
    """4 iterations at batch 2 on 4 photos, validation and checkpoints at 2 and 4 (~1 min on 2 cores)."""
    jobs = TrainingJobs(tmp_path)
    options = (
        "train_cfg.max_iters=4",
        "train_cfg.val_interval=4",
        "default_hooks.checkpoint.interval=2",
        "default_hooks.logger.interval=1",
    )
    started = jobs.start(
        TrainRequest(data=str(tiny_data), work_dir=str(tmp_path / "run"), batch_size=2, cfg_options=options)
    )
    assert started.state == "running"
    with pytest.raises(JobError, match="already running"):
        jobs.start(TrainRequest(data=str(tiny_data), work_dir=str(tmp_path / "other")))
    # A reloaded page / restarted app: a fresh runner on the same root sees the same job.
    assert TrainingJobs(tmp_path).status().pid == started.pid
    seen = _wait(jobs, lambda s: s.iter >= 1 or not s.running, timeout=300)
    assert seen.max_iters == 4 and seen.eta_s is not None
    done = _wait(jobs, lambda s: not s.running, timeout=600)
    assert done.state == "finished", done.log_tail
    assert done.returncode == 0
    assert [it for it, _ in done.losses] == [1, 2, 3, 4]
    assert all(loss > 0 for _, loss in done.losses)
    assert set(done.metrics) >= {"coco/bbox_mAP", "coco/segm_mAP"}
    assert done.checkpoint == str(tmp_path / "run" / "iter_4.pth")
    assert Path(done.checkpoint).is_file()
    assert done.fraction == 1.0


@pytest.mark.slow
def test_stop_kills_the_whole_process_group(tiny_data, tmp_path):
    jobs = TrainingJobs(tmp_path)
    jobs.start(
        TrainRequest(
            data=str(tiny_data),
            work_dir=str(tmp_path / "run"),
            batch_size=2,
            cfg_options=("train_cfg.max_iters=1000", "default_hooks.logger.interval=1"),
        )
    )
    running = _wait(jobs, lambda s: s.iter >= 1 or not s.running, timeout=300)
    assert running.state == "running", running.log_tail
    stopped = TrainingJobs(tmp_path).stop(timeout=20)  # stopped from another runner (a reloaded page)
    assert stopped.state == "stopped"
    assert stopped.iter < 1000
    assert not jobs.status().running  # the slot is free again (and our runner reaped its child)
    assert _group_gone(running.pid, timeout=10)  # dataloader workers included


def _group_gone(pgid: int, timeout: float) -> bool:
    """True once no process of the group is left (the init process reaps orphans with a delay)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False
