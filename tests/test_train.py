"""Training wrapper: config plumbing (fast) and a real few-iteration run with resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import DATA as ROBOFLOW
from support import PHOTOS, REPO

from nailseg.datasets import convert_dataset, save_report
from nailseg.paths import CONFIG_DIR, DEFAULT_CONFIG
from nailseg.train import build_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    save_report(convert_dataset(ROBOFLOW, valid_fraction=0.34, seed=0), out)
    return out


def test_build_config_points_at_the_data(tiny):
    cfg = build_config(DEFAULT_CONFIG, tiny, work_dir=tiny / "wd")
    assert cfg.train_dataloader.dataset.data_root == str(ROBOFLOW.resolve())
    assert cfg.train_dataloader.dataset.ann_file == str(tiny / "train.json")
    assert cfg.val_evaluator.ann_file == str(tiny / "valid.json")
    assert cfg.work_dir == str(tiny / "wd")
    # Masks are loaded through poly2mask so RLE instances are never dropped.
    load = [s for s in cfg.train_dataloader.dataset.pipeline if s["type"] == "LoadAnnotations"][0]
    assert load["poly2mask"] is True


def test_work_dir_is_the_command_lines_then_the_configs_then_by_name(tiny, tmp_path):
    config = tmp_path / "mine.py"
    config.write_text(f"_base_ = [{str(DEFAULT_CONFIG)!r}]\nwork_dir = {str(tmp_path / 'from-config')!r}\n")
    assert build_config(config, tiny).work_dir == str(tmp_path / "from-config")
    assert build_config(config, tiny, work_dir=tmp_path / "given").work_dir == str(tmp_path / "given")
    assert build_config(DEFAULT_CONFIG, tiny).work_dir == str(Path("work_dirs") / DEFAULT_CONFIG.stem)


def test_epochs_become_iterations_and_stretch_the_schedule(tiny):
    cfg = build_config(DEFAULT_CONFIG, tiny, epochs=3, batch_size=2, lr=0.005)
    n_train = len(json.loads((tiny / "train.json").read_text())["images"])
    per_epoch = -(-n_train // 2)
    assert cfg.train_cfg.max_iters == 3 * per_epoch
    assert cfg.train_cfg.val_interval == per_epoch
    assert cfg.param_scheduler[-1]["end"] == cfg.train_cfg.max_iters
    assert cfg.optim_wrapper.optimizer.lr == 0.005
    assert cfg.default_hooks.checkpoint.interval <= per_epoch  # at least one checkpoint per epoch


def test_seed_config_epoch_schedule_and_offline_download(tiny, monkeypatch):
    import nailseg.train as train_module

    monkeypatch.setattr(train_module, "reachable", lambda url, timeout=3.0: False)
    with pytest.warns(UserWarning, match="cannot reach"):
        cfg = build_config(CONFIG_DIR / "mask-rcnn_r50-caffe_fpn_ms_nails.py", tiny, epochs=6)
    assert cfg.load_from is None and cfg.model.backbone.init_cfg is None
    assert cfg.train_cfg.max_epochs == 6
    assert cfg.model.roi_head.bbox_head.num_classes == 1 == cfg.model.roi_head.mask_head.num_classes
    steps = [s for s in cfg.param_scheduler if s["type"] == "MultiStepLR"][0]
    assert steps["milestones"] == [4, 6]  # 8 and 11 of 12, scaled to 6


def test_no_validation_split_means_no_validation(tmp_path):
    save_report(convert_dataset(ROBOFLOW, valid_fraction=0), tmp_path)
    cfg = build_config(DEFAULT_CONFIG, tmp_path)
    assert cfg.val_cfg is None and cfg.val_dataloader is None


@pytest.mark.parametrize("setting", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"epochs": -2}])
def test_zero_or_negative_settings_are_refused_not_ignored(tiny, setting):
    # 0 once meant "the config's own schedule": `--epochs 0` silently trained the full schedule.
    with pytest.raises(ValueError, match="must be positive"):
        build_config(DEFAULT_CONFIG, tiny, **setting)


def test_cli_says_why_it_refuses_zero_epochs(tiny):
    done = subprocess.run(
        [sys.executable, "-m", "nailseg", "train", "--data", str(tiny), "--epochs", "0"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "error: epochs must be positive, got 0" in done.stderr


@pytest.mark.parametrize("files, error", [([], FileNotFoundError)])
def test_missing_data_is_explained(tmp_path, files, error):
    with pytest.raises(error, match="nailseg convert"):
        build_config(DEFAULT_CONFIG, tmp_path)


@pytest.mark.slow
def test_train_checkpoints_and_resumes(tiny, tmp_path):
    """Two iterations, then --resume to four: the second run starts where the first stopped."""
    work = tmp_path / "wd"
    base = [
        sys.executable,
        "-m",
        "nailseg",
        "train",
        "--data",
        str(tiny),
        "--work-dir",
        str(work),
        "--batch-size",
        "2",
        "--cfg-options",
        "default_hooks.checkpoint.interval=2",
        "default_hooks.logger.interval=1",
    ]
    first = subprocess.run(
        [*base[:-2], "train_cfg.max_iters=2", "train_cfg.val_interval=2", *base[-2:]], capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert (work / "iter_2.pth").is_file()
    assert_trained_in_channels_last(first.stdout + first.stderr, work / "iter_2.pth", tmp_path)
    second = subprocess.run(
        [*base[:-2], "train_cfg.max_iters=4", "train_cfg.val_interval=4", *base[-2:], "--resume"],
        capture_output=True,
        text=True,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "resumed" in log.lower() or "Load checkpoint" in log
    assert "Iter(train) [1/4]" not in log and "Iter(train) [3/4]" in log
    assert (work / "iter_4.pth").is_file()
    assert "coco/segm_mAP" in log  # validation AP is logged
    # A second stage (its own --work-dir: the last one given wins) starts from that run's full
    # checkpoint, read weights-only (mmengine's data types named in nailseg.weights).
    stage2 = subprocess.run(
        [
            *base[:-2],
            "train_cfg.max_iters=1",
            "train_cfg.val_interval=2",
            *base[-2:],
            "--load-from",
            str(work / "iter_4.pth"),
            "--work-dir",
            str(tmp_path / "ft"),
        ],
        capture_output=True,
        text=True,
    )
    assert stage2.returncode == 0, stage2.stderr[-3000:]
    assert f"Load checkpoint from {work / 'iter_4.pth'}" in stage2.stdout + stage2.stderr
    # --resume where no checkpoint was saved yet (a run stopped early): it starts from --load-from,
    # not from scratch.
    early = subprocess.run([*stage2.args[:-1], str(tmp_path / "ft-early"), "--resume"], capture_output=True, text=True)
    assert early.returncode == 0, early.stderr[-3000:]
    assert f"Load checkpoint from {work / 'iter_4.pth'}" in early.stdout + early.stderr


def assert_trained_in_channels_last(log: str, checkpoint: Path, tmp_path: Path) -> None:
    """The default config trains on the CPU in channels_last (ChannelsLastHook): its checkpoint's
    convolutions are in that layout, and its export (contiguous) loads as a model and runs on a photo."""
    import torch

    from nailseg import load_model
    from nailseg.images import load_image_rgb
    from nailseg.weights import allow_mmengine_checkpoints, export_weights

    assert "ChannelsLastHook: training in channels_last on the CPU" in log
    allow_mmengine_checkpoints()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    convs = [v for v in state.values() if v.ndim == 4 and v.shape[1] > 1 and v.shape[2] > 1]
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous() for v in convs)
    model = load_model(export_weights(checkpoint, tmp_path / "cl.safetensors"), device="cpu")
    model.predict(load_image_rgb(PHOTOS[0]), score_thr=0.0)  # runs; two iterations find little


def test_load_from_exported_weights_becomes_weights_only(tmp_path):
    import torch

    from nailseg.train import _loadable
    from nailseg.weights import BUNDLED_WEIGHTS, load_state_dict

    converted = _loadable(str(BUNDLED_WEIGHTS), tmp_path)
    state = torch.load(converted, weights_only=True)["state_dict"]
    assert state.keys() == load_state_dict(BUNDLED_WEIGHTS).keys()
    url = "https://download.openmmlab.com/some/model.pth"
    assert _loadable(url, tmp_path) == url
    with pytest.raises(FileNotFoundError, match="load_from"):
        _loadable(str(tmp_path / "missing.pth"), tmp_path)


class Boom:
    """What a hostile pickle carries: unpickling it would run os.system."""

    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/nailseg-pwned",))


@pytest.mark.slow
def test_a_pickle_with_code_is_never_unpickled(tmp_path):
    """Resume and load_from read checkpoints weights-only: a pickle with code in it is refused."""
    import torch

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": Boom()}, evil)
    marker = Path("/tmp/nailseg-pwned")
    marker.unlink(missing_ok=True)
    from nailseg.weights import WeightsError, load_checkpoint

    with pytest.raises(WeightsError, match="not a weights-only mmengine checkpoint"):
        load_checkpoint(evil)
    save_report(convert_dataset(ROBOFLOW, valid_fraction=0), tmp_path / "data")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "nailseg",
            "train",
            "--data",
            str(tmp_path / "data"),
            "--work-dir",
            str(tmp_path / "w"),
            "--load-from",
            str(evil),
            "--cfg-options",
            "train_cfg.max_iters=1",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "error: evil.pth is not a weights-only mmengine checkpoint" in run.stderr
    assert "Traceback" not in run.stderr
    assert not marker.exists()


def test_boxes_from_masks_are_tight_after_a_rotation():
    import cv2
    from mmdet.datasets.transforms import Rotate
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks

    from nailseg.model import BoxesFromMasks

    masks = np.zeros((1, 100, 100), np.uint8)
    cv2.ellipse(masks[0], (50, 50), (20, 10), 0, 0, 360, 1, -1)  # a rounded 40 x 20 nail
    results = {
        "img": np.zeros((100, 100, 3), np.uint8),
        "img_shape": (100, 100),
        "gt_bboxes": HorizontalBoxes(np.array([[30, 40, 71, 61]], np.float32)),
        "gt_masks": BitmapMasks(masks, 100, 100),
        "gt_bboxes_labels": np.zeros(1, np.int64),
        "gt_ignore_flags": np.zeros(1, bool),
    }
    rotated = Rotate(prob=1.0, level=10, max_mag=45.0, reversal_prob=0.0)(results)
    loose = rotated["gt_bboxes"].tensor.numpy()[0]
    tight = BoxesFromMasks()(rotated)["gt_bboxes"].tensor.numpy()[0]
    ys, xs = np.nonzero(rotated["gt_masks"].masks[0])
    assert np.allclose(tight, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert (tight[2] - tight[0]) * (tight[3] - tight[1]) < 0.9 * (loose[2] - loose[0]) * (loose[3] - loose[1])


def test_minutes_replace_the_schedule(tiny):
    from nailseg.schedule import lr_factor

    cfg = build_config(DEFAULT_CONFIG, tiny, minutes=2.5)
    assert cfg.param_scheduler is None
    assert [h for h in cfg.custom_hooks if h["type"] == "TimeBudgetHook"] == [dict(type="TimeBudgetHook", minutes=2.5)]
    assert cfg.train_cfg.max_iters >= 10**9  # the clock ends it
    bounded = build_config(DEFAULT_CONFIG, tiny, minutes=2.5, epochs=2, batch_size=2)
    assert bounded.train_cfg.max_iters < 100  # with --epochs, whichever ends first
    # Warm-up from 10 %, the peak at the end of warm-up, cosine down to 1 % at the budget's end.
    assert lr_factor(0.0) == pytest.approx(0.1) and lr_factor(0.03) == pytest.approx(1.0)
    assert lr_factor(0.515) == pytest.approx(0.505) and lr_factor(1.0) == pytest.approx(0.01)
    assert lr_factor(2.0) == pytest.approx(0.01)
    values = [lr_factor(f / 100) for f in range(3, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError, match="minutes must be positive"):
        build_config(DEFAULT_CONFIG, tiny, minutes=0)
    with pytest.raises(ValueError, match="iteration-based"):
        build_config(CONFIG_DIR / "mask-rcnn_r50-caffe_fpn_ms_nails.py", tiny, minutes=1)


def test_time_budget_hook_sets_the_lr_by_the_clock_and_ends_the_run(monkeypatch):
    from types import SimpleNamespace

    from mmengine.logging import MessageHub

    import nailseg.schedule as schedule

    clock = [100.0]
    monkeypatch.setattr(schedule.time, "monotonic", lambda: clock[0])
    group = {"lr": 0.02}
    loop = SimpleNamespace(_max_iters=10**9)
    runner = SimpleNamespace(
        message_hub=MessageHub.get_instance("time-budget-test"), optim_wrapper=SimpleNamespace(param_groups=[group]),
        iter=0, train_loop=loop, max_iters=loop._max_iters,
    )  # fmt: skip
    hook = schedule.TimeBudgetHook(minutes=1)
    hook.before_train(runner)
    lrs = []
    for second in (0, 1, 30, 59):  # warm-up over the first 1.8 s, then cosine
        clock[0] = 100.0 + second
        hook.before_train_iter(runner, 0)
        lrs.append(group["lr"])
        runner.max_iters = loop._max_iters
        hook.after_train_iter(runner, 0)
        runner.iter += 1
    assert lrs[0] == pytest.approx(0.002) and lrs[1] > lrs[0] and lrs[2] < 0.02 and lrs[3] < 0.001
    assert loop._max_iters == 10**9  # 59 s of 60: not yet
    clock[0] = 161.0
    hook.after_train_iter(runner, 0)
    assert loop._max_iters == runner.iter + 1  # this iteration is the last
    assert runner.message_hub.get_info("time_budget_elapsed") == pytest.approx(61.0)
    # A resumed run starts its clock at the time already spent, with the base lr of the first run.
    group["lr"] = 1e-5
    resumed = schedule.TimeBudgetHook(minutes=1)
    resumed.before_train(runner)
    assert resumed.start == pytest.approx(161.0 - 61.0) and resumed.base == [0.02]


@pytest.mark.slow
def test_minutes_stop_with_a_checkpoint_and_resume_the_clock(tiny, tmp_path):
    """A 0.3-minute run ends by itself with a checkpoint; --resume keeps the time spent."""
    import torch

    from nailseg.weights import allow_mmengine_checkpoints

    work = tmp_path / "wd"
    cmd = [sys.executable, "-m", "nailseg", "train", "--data", str(tiny), "--work-dir", str(work), "--batch-size", "1"]
    cmd += ["--minutes", "0.3", "--lr", "0.002", "--cfg-options", "default_hooks.logger.interval=1"]
    cmd += ["train_cfg.val_interval=100000", "model.backbone.pretrained=False"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = Path((work / "last_checkpoint").read_text().strip())
    assert last.is_file()
    allow_mmengine_checkpoints()
    info = torch.load(last, map_location="cpu")["message_hub"]["runtime_info"]
    assert info["time_budget_elapsed"] >= 0.3 * 60  # ended by the clock
    assert info["time_budget_base_lr"] == [0.002]
    records = [json.loads(line) for line in next(work.rglob("scalars.json")).read_text().splitlines()]
    assert all(0 < r["lr"] <= 0.002 + 1e-9 for r in records if "lr" in r)
    # Resumed: the budget is already spent, so it trains one iteration and stops.
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert Path((work / "last_checkpoint").read_text().strip()) != last


def test_a_long_temp_folder_is_swapped_for_a_short_one_before_data_loading(tmp_path):
    """Under a temp folder over 70 bytes, multiprocessing's sockets (what DataLoader workers hand
    batches over) cannot be made; training then hung. ``use_short_temp_dir`` runs first in ``train``."""
    long_dir = tmp_path / ("t" * 80)
    long_dir.mkdir()
    probe = (
        "import multiprocessing.connection as c, sys\n"
        "if sys.argv[1] == 'fix':\n"
        "    from nailseg.train import use_short_temp_dir; print(use_short_temp_dir())\n"
        "try:\n"
        "    c.Listener(family='AF_UNIX').close(); print('socket ok')\n"
        "except OSError as err:\n"
        "    print('socket failed:', err)\n"
    )
    env = {**os.environ, "TMPDIR": str(long_dir)}
    runs = {
        how: subprocess.run([sys.executable, "-c", probe, how], capture_output=True, text=True, env=env, cwd=REPO)
        for how in ("as-is", "fix")
    }
    assert "socket failed" in runs["as-is"].stdout and "too long" in runs["as-is"].stdout
    assert runs["fix"].stdout.splitlines() == ["/tmp", "socket ok"], runs["fix"].stderr
