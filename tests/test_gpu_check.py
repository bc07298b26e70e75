"""scripts/gpu_check.sh, the GPU half's one script: its build flags are the Docker CUDA image's, and
its measuring phase runs end to end (here on the CPU, with the test photos and tiny numbers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from support import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_mmcv_is_built_with_the_docker_cuda_flags():
    text = SCRIPT.read_text()
    # One source of the flags: the file the Dockerfile's CUDA stage hands to scripts/setup.sh.
    assert "source scripts/mmcv-cuda.env" in text
    assert "NAILSEG_MMCV_ENV=scripts/mmcv-cuda.env" in (REPO / "Dockerfile").read_text()
    assert "FORCE_CUDA=" not in text, "FORCE_CUDA set outside the env file"
    # MMCV_WITH_OPS only for mmcv-lite (the torchvision path), never for the CUDA build.
    assert text.count("MMCV_WITH_OPS=") == text.count("MMCV_WITH_OPS=0") == 1
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_device_phase_without_prepared_files_says_what_to_do(tmp_path):
    if (REPO / ".gpu" / "whl").is_dir():
        pytest.skip(".gpu/ is prepared in this checkout")
    env = {**os.environ, "NAILSEG_GPU_STATE": str(tmp_path / "state"), "OUT": str(tmp_path / "out")}
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "scripts/gpu_check.sh prepare" in done.stderr
    assert not (tmp_path / "state").exists()  # nothing started, nothing written


def measure_again(tmp_path, out: str, *extra: str) -> subprocess.CompletedProcess:
    """``bench/gpu.py`` once more on the dry run's state, into a fresh ``tmp_path / out``: a later device call."""
    state = tmp_path / "state"
    cmd = [sys.executable, "bench/gpu.py", "--data", str(state / "data"), "--state", str(state)]
    return subprocess.run(
        [*cmd, "--out", str(tmp_path / out), *extra], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_dry_run_measures_every_step(tmp_path):
    env = {**os.environ, "NAILSEG_GPU_STATE": str(tmp_path / "state"), "NAILSEG_GPU_DRY_OUT": str(tmp_path / "out")}
    done = subprocess.run([str(SCRIPT), "dry-run"], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "gpu.json").read_text())
    # What matters most first: the device time may run out before the end (it did on 2026-11-27).
    assert list(results) == ["env", "train", "export", "train-r50", "predict", "evaluate"]
    for run in (results["train"]["mask-rcnn_effilite0_fpn-128_nails"], results["train-r50"]):
        assert run["images_per_s"] > 0 and run["loss_curve"]
    # The bundled model finds the two validation photos' nails; the 1-epoch run is scored as well.
    assert results["evaluate"]["bundled"]["segm"]["AP"] > 0.5
    assert 0 <= results["evaluate"]["mask-rcnn_effilite0_fpn-128_nails"]["segm"]["AP"] <= 1
    # predict's own time of its photos (after its model loaded), not a difference of two runs: > 0.
    assert all(results["predict"][k] > 0 for k in ("device_ms_per_photo", "cpu_same_machine_ms_per_photo"))
    back = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "mask-rcnn_effilite0_fpn-128_nails-gpu.safetensors" in back and "gpu.md" in back
    assert len(back) <= 8  # what the device tool brings back at most
    # Called again on the same state (a call cut off by the device's time limit): every step is skipped.
    again = measure_again(tmp_path, "again")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("done before") == len(results)
    assert json.loads((tmp_path / "again" / "gpu.json").read_text()) == results
    assert "mask-rcnn_effilite0_fpn-128_nails-gpu.safetensors" in os.listdir(tmp_path / "again")  # a fresh OUT
    # A call that fails (or is cut off) after the export still brings the trained weights back.
    marks = tmp_path / "state" / "results.json"
    marks.write_text(json.dumps({k: v for k, v in results.items() if k in ("env", "train", "export")}))
    shutil.rmtree(tmp_path / "state" / "work" / "mask-rcnn_r50-caffe_fpn_ms_nails")
    failed = measure_again(tmp_path, "failed", "--r50-epochs", "0")
    assert failed.returncode != 0 and "epochs must be positive" in failed.stderr, failed.stderr[-2000:]
    assert "mask-rcnn_effilite0_fpn-128_nails-gpu.safetensors" in os.listdir(tmp_path / "failed")
    # A training-only run (NAILSEG_GPU_SKIP on the GPU machine): the other steps are left out.
    skipped = measure_again(tmp_path, "skipped", "--skip", "train-r50", "predict", "evaluate")
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert skipped.stdout.count("skipped (--skip)") == 3
    assert list(json.loads((tmp_path / "skipped" / "gpu.json").read_text())) == ["env", "train", "export"]
    assert "mask-rcnn_effilite0_fpn-128_nails-gpu.safetensors" in os.listdir(tmp_path / "skipped")
