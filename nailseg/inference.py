"""Inference: load a model once, turn photos into :class:`~nailseg.result.Nails`.

This is the only module that touches mmdet's result types (``DetDataSample``); everything
downstream sees ``Nails``. It never draws (see :mod:`nailseg.draw`).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from nailseg.convert import resize_mask
from nailseg.dedup import MaskDedup, shown_nails
from nailseg.images import fit_within
from nailseg.precision import channels_last, choose_precision, use_bf16
from nailseg.result import Nails
from nailseg.weights import (
    FALLBACK_SCORE_THR,
    ModelSettings,
    ResolvedWeights,
    WeightsError,
    load_model_config,
    load_state_dict,
    resolve_weights,
)

# The model sees photos at ~432 px; a 50 MP photo is shrunk to this long side before inference
# and its masks are scaled back, which keeps memory flat without changing what the model sees.
MAX_INFERENCE_SIDE = 1600


@dataclass
class NailSegmenter:
    """A loaded model and its test pipeline. Thread-safe: one photo at a time per model."""

    model: object
    pipeline: object
    weights: ResolvedWeights
    device: str
    load_seconds: float
    dedup: MaskDedup | None = MaskDedup()  # None: every detection, duplicates too
    score_thr: float = FALLBACK_SCORE_THR  # the model's default threshold (nailseg.weights.ModelSettings)
    precision: str = "fp32"  # "bf16": conv-heavy parts under CPU autocast (nailseg.precision)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def predict(self, image_rgb: np.ndarray, score_thr: float | None = None) -> Nails:
        """Find the nails in one photo.

        Args:
            image_rgb: ``(H, W, 3) uint8`` RGB photo (EXIF rotation already applied, see
                :func:`nailseg.images.load_image_rgb`).
            score_thr: keep nails scoring at least this, in ``[0, 1]``; None: the model's own
                default, :attr:`score_thr`.

        Returns:
            ``Nails`` in pixels of ``image_rgb``, numbered in reading order.
        """
        return self.predict_all(image_rgb, min_score=self.score_thr if score_thr is None else score_thr)

    def predict_all(self, image_rgb: np.ndarray, min_score: float = 0.0, dedup: bool = True) -> Nails:
        """Every nail the model reports scoring at least ``min_score`` (at most ``max_per_img``).

        Duplicates among them (two masks on one nail, a box spanning two nails) are removed with
        :attr:`dedup` unless ``dedup`` is False.
        """
        detections, to_photo = self.detect(image_rgb)
        return to_photo(shown_nails(detections, min_score, self.dedup if dedup else None))

    def detect(self, image_rgb: np.ndarray) -> tuple[Nails, Callable[[Nails], Nails]]:
        """The model's every detection, at the size it saw the photo (at most
        :data:`MAX_INFERENCE_SIDE`), in its own order, and the function that turns a selection of
        them into the photo's ``Nails`` (pixels of ``image_rgb``, reading order).

        Thresholds and duplicate suppression work on the model's masks, before a large photo's masks
        are scaled back to its full size (50 MB each): :meth:`predict_all` is
        ``to_photo(dedup(detections.filter(min_score)))``, and an evaluation can try many
        thresholds on one model pass the same way (:func:`nailseg.dedup.shown_nails`).
        """
        import torch

        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}")
        height, width = image_rgb.shape[:2]
        small, scale = fit_within(image_rgb, MAX_INFERENCE_SIDE)
        data = self.pipeline({"img": np.ascontiguousarray(small[..., ::-1]), "img_id": 0})  # mmdet wants BGR
        batch = {"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]}
        with self._lock, torch.no_grad():
            sample = self.model.test_step(batch)[0]
        return _to_nails(sample, small.shape[:2]), partial(_to_photo, scale=scale, height=height, width=width)


def _to_nails(sample, size: tuple[int, int]) -> Nails:
    """The adapter: mmdet ``DetDataSample`` -> ``Nails`` of the ``size`` photo the model saw, in its order."""
    inst = sample.pred_instances
    boxes = inst.bboxes.cpu().numpy().astype(np.float32).reshape(-1, 4)
    scores = inst.scores.cpu().numpy().astype(np.float32)
    # mmdet's masks are (N, h, w) bool already; on a CPU they are viewed, not copied.
    masks = inst.masks.cpu().numpy().astype(bool, copy=False) if len(scores) else np.zeros((0, *size), bool)
    return Nails(boxes, masks, scores)


def _to_photo(nails: Nails, scale: float, height: int, width: int) -> Nails:
    """Model-size ``nails`` in pixels of the ``height x width`` photo shrunk by ``scale``, in reading order."""
    boxes = nails.boxes_xyxy / scale
    masks = nails.masks
    if scale != 1.0:
        masks = np.zeros((0, height, width), bool)
        if len(nails):
            masks = np.stack([resize_mask(m, height, width) for m in nails.masks])
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return Nails(boxes, masks, nails.scores.copy()).in_reading_order()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    weights: str | Path | None = None,
    device: str | None = None,
    allow_py_config: bool = False,
    precision: str | None = None,
) -> NailSegmenter:
    """Build the model of a weights spec and load its weights (no unpickling, no config code).

    Args:
        weights: local path or ``hf://owner/repo[@rev]/file.safetensors``; default
            ``$NAILSEG_WEIGHTS``, then the bundled model. The config is the ``.json`` file with
            the same stem (see :mod:`nailseg.weights`).
        device: ``"cpu"``, ``"cuda"``...; default CUDA when present.
        allow_py_config: also accept a ``.py`` config beside local weights (it runs Python);
            only for weights named by the machine's owner (the command line).
        precision: ``fp32``, ``bf16`` or ``auto``; default ``$NAILSEG_PRECISION``, else ``auto``
            (:func:`nailseg.precision.choose_precision`: bfloat16 on CPUs that compute it natively).
    """
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import nailseg.model  # noqa: F401 - registers the backbone and mask head

    start = time.perf_counter()
    resolved = resolve_weights(weights, allow_py_config=allow_py_config)
    device = device or default_device()
    precision = choose_precision(device, precision)
    cfg = load_model_config(resolved.config)
    init_default_scope(cfg.default_scope)
    try:
        model = MODELS.build(copy.deepcopy(cfg.model))
        model.load_state_dict(load_state_dict(resolved.weights), strict=True)
        pipeline = Compose(_inference_pipeline(cfg.test_pipeline))
        settings = ModelSettings.of(cfg.model)
    except (TypeError, KeyError, ValueError, RuntimeError, AssertionError) as err:
        if isinstance(err, WeightsError):
            raise
        raise WeightsError(
            f"{resolved.weights.name} and its config do not make a model ({err.__class__.__name__}: {str(err)[:200]})"
        ) from err
    model.to(device).eval()
    fold = getattr(getattr(model, "backbone", None), "fold_batchnorm", None)
    if fold:  # frozen BatchNorm folded into its convolutions: the same outputs, one pass less
        fold()
    if precision == "bf16":
        use_bf16(model)
    if device == "cpu":
        channels_last(model)
    model.dataset_meta = {"classes": ("nail",)}
    seconds = time.perf_counter() - start
    return NailSegmenter(model, pipeline, resolved, device, seconds, settings.dedup, settings.score_thr, precision)


def _inference_pipeline(test_pipeline: list[dict]) -> list[dict]:
    """The config's test pipeline, reading an array instead of a file and without annotations."""
    steps = [dict(type="mmdet.LoadImageFromNDArray")]
    for step in test_pipeline:
        if step["type"] in ("LoadImageFromFile", "LoadAnnotations"):
            continue
        step = dict(step)
        if step["type"] == "PackDetInputs":
            step["meta_keys"] = ("img_id", "ori_shape", "img_shape", "scale_factor")
        steps.append(step)
    return steps
