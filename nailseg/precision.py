"""Which precision the model runs in on a CPU, and running its convolution-heavy parts in bfloat16.

CPUs with AMX or AVX512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later) run a 3x3
convolution in bfloat16 several times faster than in float32; CPUs without them (many laptops,
some Spaces hardware) emulate it, slower than float32. The choice is made at run time from the
CPU's own capabilities, as torch reports them, never from the machine's name.
``NAILSEG_PRECISION=fp32|bf16|auto`` overrides it (``auto`` when unset). On a GPU: float32.

Only the parts that are convolutions and matrix products run under autocast (backbone, neck, the
RPN's convolutions, the box head's fc layers, the mask head's convolutions); their outputs come
back as float32, so what follows (box decoding, mmcv's NMS, which is float32 only, mask pasting)
sees float32 as before. RoIAlign reads float32 features (``nailseg.model.NailRoIExtractor``).
"""

from __future__ import annotations

import functools
import os

import torch

PRECISIONS = ("fp32", "bf16")
# The model's parts whose forward runs under bfloat16 autocast, by attribute path.
BF16_PARTS = ("backbone", "neck", "rpn_head", "roi_head.bbox_head", "roi_head.mask_head")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX512-BF16), as torch detects it."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def choose_precision(device: str = "cpu", requested: str | None = None) -> str:
    """``fp32`` or ``bf16`` for a model on ``device``.

    Args:
        device: where the model runs; anything but a CPU gets ``fp32``.
        requested: ``fp32``, ``bf16`` or ``auto``; default ``$NAILSEG_PRECISION``, else ``auto``
            (``bf16`` where :func:`cpu_has_bf16`).

    Raises:
        ValueError: ``requested`` is none of those.
    """
    requested = (requested or os.environ.get("NAILSEG_PRECISION") or "auto").strip().lower()
    if requested not in (*PRECISIONS, "auto"):
        raise ValueError(f"NAILSEG_PRECISION must be fp32, bf16 or auto, got {requested!r}")
    if not str(device).startswith("cpu"):
        return "fp32"
    if requested == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return requested


def _to_float(value):
    """``value`` with every bfloat16 tensor in it (nested tuples, lists, dicts) as float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == torch.bfloat16 else value
    if isinstance(value, tuple | list):
        return type(value)(_to_float(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float(v) for k, v in value.items()}
    return value


def _bf16_forward(forward):
    @functools.wraps(forward)
    def run(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return _to_float(out)

    run.nailseg_bf16 = True
    return run


def _part(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    for name in path.split("."):
        model = getattr(model, name, None)
        if model is None:
            return None
    return model


def use_bf16(model: torch.nn.Module, parts: tuple[str, ...] = BF16_PARTS) -> list[str]:
    """Run ``parts`` of ``model`` under CPU bfloat16 autocast, their outputs as float32.

    Weights stay float32 (autocast casts them per operation); idempotent. Works for inference and
    for training (autograd passes through autocast). Returns the parts found.
    """
    found = []
    for path in parts:
        module = _part(model, path)
        if module is None:
            continue
        if not getattr(module.forward, "nailseg_bf16", False):
            module.forward = _bf16_forward(module.forward)
        found.append(path)
    return found


def channels_last(model: torch.nn.Module) -> bool:
    """Put the model's 4-D weights in ``channels_last`` where every RoI layer reads that layout.

    oneDNN's convolutions are faster in ``channels_last`` on a CPU (1.2x for the default model in
    float32 on this project's machine, ``bench/README.md``) and their outputs stay in it.
    ``NailRoIAlign`` reads it as it is; mmcv's CPU RoIAlign reads it as if it were contiguous and
    finds no nails, so a model with mmcv's layer (the R50 reference, old configs) is left as it is.
    Returns whether the layout was changed.
    """
    if any(type(m).__name__ == "RoIAlign" and type(m).__module__.startswith("mmcv") for m in model.modules()):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def register_channels_last_hook() -> None:
    """Register :class:`ChannelsLastHook` with mmengine (the default config's ``custom_hooks`` names it)."""
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    if "ChannelsLastHook" in HOOKS.module_dict:
        return

    @HOOKS.register_module()
    class ChannelsLastHook(Hook):
        """Train in ``channels_last`` on a CPU (:func:`channels_last`), as the model answers there.

        The parameters keep their identity (``Module.to`` swaps their data), so the optimizer built
        before, and a resumed run's momentum, apply as before; checkpoints load in any layout, and
        exported weights are made contiguous (``nailseg.weights``). On a GPU the layout stays.
        """

        def before_train(self, runner) -> None:
            model = getattr(runner.model, "module", runner.model)  # DDP wraps the model in .module
            if next(model.parameters()).device.type == "cpu" and channels_last(model):
                runner.logger.info("ChannelsLastHook: training in channels_last on the CPU")


def register_optim_wrapper() -> None:
    """Register :class:`CpuBf16OptimWrapper` with mmengine (done on import of ``nailseg.train``)."""
    from mmengine.optim import OptimWrapper
    from mmengine.registry import OPTIM_WRAPPERS

    if "CpuBf16OptimWrapper" in OPTIM_WRAPPERS.module_dict:
        return

    @OPTIM_WRAPPERS.register_module()
    class CpuBf16OptimWrapper(OptimWrapper):
        """Training in bfloat16 on a CPU: mmengine's ``AmpOptimWrapper`` asserts a CUDA device.

        The model's convolution-heavy parts run under CPU autocast (:func:`use_bf16`, applied on
        the first step); weights, gradients and the optimizer stay float32. No grad scaler:
        bfloat16 has float32's exponent range, so gradients do not underflow as float16's do.
        """

        def optim_context(self, model: torch.nn.Module):
            use_bf16(getattr(model, "module", model))  # DDP wraps the model in .module
            return super().optim_context(model)
