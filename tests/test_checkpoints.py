"""No code from a checkpoint, ever (issue 27, row 3 and item 4).

A checkpoint from a model zoo or another person is loaded weights-only, and its config is data:
``export`` reads mmengine's dumped ``meta.cfg`` as literals (``read_dumped_config``), ``train
--load-from`` hands mmengine a file whose config it never runs, and ``train --resume`` refuses a
``meta.config`` (what mmengine's resume would execute).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import convert_test_photos, fake_checkpoint

from nailseg import cli
from nailseg.paths import CONFIG_DIR
from nailseg.weights import WeightsError, export_weights, read_dumped_config


def hostile_cfg(marker: Path) -> str:
    """A ``meta.cfg`` that runs a shell command when executed as Python, and is a MaskRCNN otherwise."""
    return f"model = dict(type=__import__('os').system('touch {marker}') or 'MaskRCNN')\n"


def test_export_never_runs_the_checkpoints_config(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    checkpoint = fake_checkpoint(tmp_path / "zoo.pth", cfg=hostile_cfg(marker))
    out = tmp_path / "w.safetensors"
    assert cli.main(["export", str(checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: zoo.pth: meta.cfg line 1:") and "is not plain data" in err
    assert not marker.exists()
    assert not out.exists() and not out.with_suffix(".json").exists()


DUMPED_REFUSALS = {
    "a call": ("x = print('hi')\n", "line 1: \"print('hi')\" is not plain data"),
    "a name": ("x = os\n", "line 1: 'os' is not plain data"),
    "an attribute": ("x = dict(a=os.environ)\n", "'os.environ' is not plain data"),
    "an import": ("import os\n", "line 1 is not `name = value`"),
    "a function": ("def f():\n    pass\n", "line 1 is not `name = value`"),
    "dict(**x)": ("x = dict(**y)\n", "'dict(**y)' is not plain data"),
    "a lambda": ("x = [lambda: 0]\n", "'lambda: 0' is not plain data"),
    "an f-string": ("x = f'{y}'\n", "is not plain data"),
    "arithmetic": ("x = 2 ** 99999\n", "'2 ** 99999' is not plain data"),
    "infinity": ("x = 1e999\n", "is not plain data"),
    "a set": ("x = {1, 2}\n", "is not plain data"),
    "two targets": ("x = y = 1\n", "line 1 is not `name = value`"),
    "not Python": ("x = (\n", "is not a config mmengine dumped (SyntaxError)"),
    "empty": ("", "carries no config (meta.cfg)"),
    "not text": (b"x = 1", "carries no config (meta.cfg)"),
    "deeply nested": ("x = " + "[" * 5000 + "]" * 5000 + "\n", "is not a config mmengine dumped"),
}


@pytest.mark.parametrize("text, message", DUMPED_REFUSALS.values(), ids=DUMPED_REFUSALS.keys())
def test_a_dumped_config_is_read_as_data_only(text, message):
    with pytest.raises(WeightsError, match="^ck.pth") as err:
        read_dumped_config(text, "ck.pth")
    assert message in str(err.value)


@pytest.mark.parametrize("config", sorted(CONFIG_DIR.glob("mask-rcnn_*.py")), ids=lambda p: p.stem)
def test_every_config_here_reads_as_mmengine_runs_it(config):
    """What mmengine dumps of this project's configs reads to what mmengine itself builds from it."""
    from mmengine.config import Config

    text = Config.fromfile(str(config), import_custom_modules=False).pretty_text
    executed = Config.fromstring(text, ".py").to_dict()  # our own file: running it is fine here
    assert json.loads(json.dumps(read_dumped_config(text))) == json.loads(json.dumps(executed))


def test_export_of_a_real_dump_keeps_the_models_config(tmp_path):
    from nailseg.inference import load_model

    out = export_weights(fake_checkpoint(tmp_path / "iter_1.pth"), tmp_path / "w.safetensors")
    config = json.loads(out.with_suffix(".json").read_text())
    assert config["model"]["type"] == "MaskRCNN" and config["work_dir"] is None
    assert config["train_dataloader"]["dataset"]["data_root"] == ""
    assert "custom_imports" not in config
    assert len(load_model(out, device="cpu").predict(np.zeros((64, 64, 3), np.uint8))) == 0


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return convert_test_photos(tmp_path_factory.mktemp("data"), valid_fraction=0)


def test_resume_refuses_a_meta_config_mmengine_would_run(data, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    work = tmp_path / "w"
    work.mkdir()
    # What mmengine's Runner.resume reads: epoch and iter, then it executes meta.config.
    evil = fake_checkpoint(work / "iter_1.pth", epoch=0, iter=1, config=f"import os\nos.system('touch {marker}')\n")
    (work / "last_checkpoint").write_text(str(evil))
    argv = ["train", "--data", str(data), "--work-dir", str(work), "--resume", "--cfg-options", "train_cfg.max_iters=1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "error: iter_1.pth carries meta.config, which resuming would run as Python: refused" in err
    assert not marker.exists()


@pytest.mark.slow
def test_load_from_a_checkpoint_with_a_hostile_config_runs_none_of_it(data, tmp_path):
    """One real training iteration from a checkpoint whose meta.cfg (and meta.config) is code."""
    marker = tmp_path / "MARKER"
    zoo = fake_checkpoint(tmp_path / "zoo.pth", cfg=hostile_cfg(marker), config=hostile_cfg(marker))
    run = subprocess.run(
        [sys.executable, "-m", "nailseg", "train", "--data", str(data), "--work-dir", str(tmp_path / "w")]
        + ["--load-from", str(zoo), "--batch-size", "1", "--cfg-options", "train_cfg.max_iters=1"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Load checkpoint from {zoo}" in run.stdout + run.stderr
    assert not marker.exists()
