"""Precision and the fp32 speed-ups: the choice from the CPU's capabilities, bf16 and fp32 paths, same nails."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from support import BUNDLED_WEIGHTS

from nailseg import precision
from nailseg.dedup import mask_iou
from nailseg.images import load_image_rgb
from nailseg.inference import load_model


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bfloat16."""

    def pretend(native: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)

    return pretend


def test_the_choice_follows_the_cpu_and_the_override(cpu_with, monkeypatch):
    monkeypatch.delenv("NAILSEG_PRECISION", raising=False)
    cpu_with(True)
    assert precision.cpu_has_bf16() and precision.choose_precision("cpu") == "bf16"
    assert precision.choose_precision("cuda") == "fp32"  # a GPU keeps float32
    monkeypatch.setenv("NAILSEG_PRECISION", "fp32")
    assert precision.choose_precision("cpu") == "fp32"
    cpu_with(False)
    monkeypatch.setenv("NAILSEG_PRECISION", "auto")
    assert precision.choose_precision("cpu") == "fp32"
    monkeypatch.setenv("NAILSEG_PRECISION", " BF16 ")
    assert precision.choose_precision("cpu") == "bf16"  # forced: emulated, but it runs
    assert precision.choose_precision("cpu", "fp32") == "fp32"  # the argument beats the variable
    monkeypatch.setenv("NAILSEG_PRECISION", "fp16")
    with pytest.raises(ValueError, match="fp32, bf16 or auto"):
        precision.choose_precision("cpu")


def _reference_model(weights):
    """Today's model as mmdet builds it from the bundled config: mmcv's RoIAlign, BatchNorm unfolded."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import nailseg.model  # noqa: F401
    from nailseg.weights import load_model_config, load_state_dict

    cfg = load_model_config(weights.with_suffix(".json"))
    model_cfg = copy.deepcopy(cfg.model)
    for key in ("bbox_roi_extractor", "mask_roi_extractor"):
        model_cfg["roi_head"][key]["type"] = "SingleRoIExtractor"
        model_cfg["roi_head"][key]["roi_layer"]["type"] = "RoIAlign"
    init_default_scope("mmdet")
    model = MODELS.build(model_cfg)
    model.load_state_dict(load_state_dict(weights))
    return model.eval()


def _matched_iou(a, b) -> list[float]:
    return [float(mask_iou(m[None], n[None])[0, 0]) for m, n in zip(a.masks, b.masks)]


def test_fp32_gives_todays_nails(photos, monkeypatch):
    # NailRoIAlign and folded BatchNorm against mmcv's RoIAlign and the unfolded backbone.
    segmenter = load_model(BUNDLED_WEIGHTS, device="cpu", precision="fp32")
    assert segmenter.precision == "fp32"
    assert type(segmenter.model.roi_head.bbox_roi_extractor.roi_layers[0]).__name__ == "NailRoIAlign"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in segmenter.model.backbone.modules())
    reference = copy.copy(segmenter)
    reference.model = _reference_model(BUNDLED_WEIGHTS)
    for photo in photos[:3]:
        image = load_image_rgb(photo)
        ours, theirs = segmenter.predict_all(image, 0.3), reference.predict_all(image, 0.3)
        assert len(ours) == len(theirs) > 0
        assert np.abs(ours.scores - theirs.scores).max() < 1e-3
        assert min(_matched_iou(ours, theirs)) >= 0.99


def test_bf16_runs_the_heavy_parts_and_finds_the_same_nails(photos):
    fp32 = load_model(BUNDLED_WEIGHTS, device="cpu", precision="fp32")
    bf16 = load_model(BUNDLED_WEIGHTS, device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    assert bf16.model.backbone.forward.nailseg_bf16 and bf16.model.roi_head.mask_head.forward.nailseg_bf16
    assert not getattr(fp32.model.backbone.forward, "nailseg_bf16", False)
    # The nails a user sees, at the model's own threshold, on every test photo. Below it, a nail the
    # model is unsure of can change: on photos[0] stage 8 scores a sliver beside nail 3 at 0.66 in
    # float32 and at 0.73 with a mask twice the size in bfloat16 (both hidden at 0.85).
    for photo in photos:
        image = load_image_rgb(photo)
        a, b = fp32.predict_all(image, fp32.score_thr), bf16.predict_all(image, bf16.score_thr)
        assert len(a) == len(b) > 0, photo.name
        assert b.scores.dtype == np.float32 and np.abs(a.scores - b.scores).max() < 0.05
        assert min(_matched_iou(a, b)) > 0.85  # bfloat16 keeps 8 bits: close, not equal


def test_bf16_wrapping_is_idempotent_and_float_out():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    holder = torch.nn.Module()
    holder.backbone = model
    assert precision.use_bf16(holder) == ["backbone"]
    first = holder.backbone.forward
    assert precision.use_bf16(holder) == ["backbone"] and holder.backbone.forward is first
    out = holder.backbone(torch.randn(1, 3, 8, 8))
    assert out.dtype == torch.float32


def test_weights_config_names_the_extractor_as_data():
    config = json.loads(BUNDLED_WEIGHTS.with_suffix(".json").read_text())
    for key in ("bbox_roi_extractor", "mask_roi_extractor"):
        extractor = config["model"]["roi_head"][key]
        assert extractor["type"] == "NailRoIExtractor" and extractor["roi_layer"]["type"] == "NailRoIAlign"


def test_bf16_optim_wrapper_trains_in_autocast_with_float32_weights():
    from mmengine.optim import OptimWrapper
    from mmengine.registry import OPTIM_WRAPPERS

    precision.register_optim_wrapper()
    holder = torch.nn.Module()
    holder.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    holder.backbone(torch.randn(2, 3, 8, 8))  # materialise the lazy layer
    wrapper = OPTIM_WRAPPERS.build(
        dict(type="CpuBf16OptimWrapper", optimizer=torch.optim.SGD(holder.parameters(), lr=0.1))
    )
    assert isinstance(wrapper, OptimWrapper)
    seen = []
    holder.backbone[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = holder.backbone[0].weight.detach().clone()
    with wrapper.optim_context(holder):
        loss = holder.backbone(torch.randn(2, 3, 8, 8)).square().mean()
    wrapper.update_params(loss)
    assert seen == [torch.bfloat16]  # the convolution ran in bfloat16
    assert loss.dtype == torch.float32 and holder.backbone[0].weight.dtype == torch.float32
    assert not torch.equal(before, holder.backbone[0].weight)  # and it trained


@pytest.mark.slow
@pytest.mark.skipif(
    not precision.cpu_has_bf16(), reason="no native bfloat16 on this CPU: emulated, a training step takes minutes"
)
def test_bf16_training_on_the_cpu(tmp_path):
    """Two iterations with the CPU bf16 optimizer wrapper: it trains, float32 weights, finite losses."""
    import subprocess
    import sys

    from support import convert_test_photos

    data = convert_test_photos(tmp_path / "data")
    work = tmp_path / "wd"
    cmd = [sys.executable, "-m", "nailseg", "train", "--data", str(data), "--work-dir", str(work), "--batch-size", "2"]
    cmd += ["--precision", "bf16", "--cfg-options", "train_cfg.max_iters=2", "train_cfg.val_interval=100"]
    cmd += ["default_hooks.logger.interval=1", "model.backbone.pretrained=False"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CpuBf16OptimWrapper" in (next(work.rglob("*.py"))).read_text()  # the run's dumped config
    records = [json.loads(line) for line in next(work.rglob("scalars.json")).read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    from nailseg.weights import load_checkpoint

    state = load_checkpoint(work / "iter_2.pth")["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


def test_the_status_line_and_predict_say_which_precision_ran(monkeypatch):
    from types import SimpleNamespace

    from nailseg.serving import describe

    model = SimpleNamespace(
        weights=SimpleNamespace(source=str(BUNDLED_WEIGHTS)), load_seconds=1.0, device="cpu", precision="bf16",
        score_thr=0.85,
    )  # fmt: skip
    assert "on cpu, bf16;" in describe(model)
    model.precision = "fp32"
    assert "on cpu, fp32;" in describe(model)
