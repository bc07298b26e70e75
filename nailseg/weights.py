"""Where weights come from and how they are stored: safetensors and JSON, never pickles or code.

A weights spec is a local ``.safetensors`` path or ``hf://owner/repo[@revision]/file.safetensors``.
Its config is the file with the same stem beside it: ``.json``, which is read as data (checked
against an allow-list of the model types this project builds; ``custom_imports`` ignored).
A ``.py`` config runs Python when mmengine reads it, so it is accepted only where the person who
named the weights owns the machine (``nailseg`` on the command line, ``$NAILSEG_WEIGHTS``), never
from the Hub or the web app. Precedence everywhere: an explicit spec > ``$NAILSEG_WEIGHTS`` >
the bundled model.

A training checkpoint (``.pth``, from this project or a model zoo) is read weights-only, and the
config mmengine dumped into it (``meta.cfg``) is read as data by :func:`read_dumped_config`,
never executed: exporting someone else's checkpoint runs none of its code.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from nailseg.errors import HubUnreachable, WeightsError
from nailseg.paths import BUNDLED_WEIGHTS

__all__ = [
    "BUNDLED_WEIGHTS",
    "FALLBACK_SCORE_THR",
    "HubUnreachable",
    "ModelSettings",
    "WeightsError",
    "load_model_config",
    "resolve_weights",
]

ENV_VAR = "NAILSEG_WEIGHTS"
MAX_CONFIG_BYTES = 1024**2
# What a config from outside may build: the types of this project's own configs (model and
# inference pipeline). mmengine's registry would otherwise import any dotted name (``os.system``).
ALLOWED_TYPES = frozenset(
    {
        "MaskRCNN",
        "DetDataPreprocessor",
        "EfficientNetLite0",
        "ResNet",
        "BN",
        "FPN",
        "RPNHead",
        "AnchorGenerator",
        "DeltaXYWHBBoxCoder",
        "CrossEntropyLoss",
        "L1Loss",
        "StandardRoIHead",
        "SingleRoIExtractor",
        "RoIAlign",
        "NailRoIExtractor",
        "NailRoIAlign",
        "Shared2FCBBoxHead",
        "FCNMaskHead",
        "NailMaskHead",
        "MaxIoUAssigner",
        "RandomSampler",
        "nms",
        "LoadImageFromFile",
        "Resize",
        "LoadAnnotations",
        "PackDetInputs",
    }
)
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_HUB_SPEC = re.compile(
    rf"hf://(?P<owner>{_NAME})/(?P<repo>{_NAME})(?:@(?P<rev>{_NAME}))?/(?P<file>(?:{_NAME}/)*{_NAME})"
)


# A model's default score threshold is its own: ``test_cfg.rcnn.default_score_thr`` in its config,
# chosen by F1 on its validation split (checkpoints/README.md) and recorded by ``nailseg export
# --score-thr`` or ``--choose-thr``. Weights whose config states none get this.
FALLBACK_SCORE_THR = 0.5


def checked_score_thr(value, what: str = "the default score threshold") -> float:
    """``value`` as a float if it is a number in ``(0, 1]``; else a WeightsError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise WeightsError(f"{what} must be a number in (0, 1], got {str(value)[:40]}")
    return float(value)


@dataclass(frozen=True)
class ModelSettings:
    """NailSeg's own settings of a model, kept in its config under ``model.test_cfg.rcnn`` (keys
    mmdet ignores). :meth:`of` is the one reader of them.

    Attributes:
        stated_score_thr: ``default_score_thr``, the threshold users get unless they choose one;
            None when the config states none (:attr:`score_thr` is then the fallback).
        mask_dedup: ``mask_dedup``, the fields of :class:`nailseg.dedup.MaskDedup`; absent: its
            defaults (``{}``); ``None``: every detection is reported, duplicates too.
    """

    stated_score_thr: float | None = None
    mask_dedup: dict | None = field(default_factory=dict)

    @classmethod
    def of(cls, model_cfg) -> ModelSettings:
        """The settings of a model config (a dict or mmengine's ``ConfigDict``).

        Raises:
            WeightsError: a threshold outside ``(0, 1]``, suppression settings that are not MaskDedup's.
        """
        rcnn = (model_cfg.get("test_cfg") or {}).get("rcnn") or {}
        value = rcnn.get("default_score_thr")
        stated = None if value is None else checked_score_thr(value, "config: default_score_thr")
        dedup = rcnn.get("mask_dedup", {})
        settings = cls(stated, None if dedup is None else dict(dedup))
        try:
            settings.dedup  # noqa: B018 - checked now, not at the first photo
        except TypeError as err:
            raise WeightsError(f"config: mask_dedup: {err}") from None
        return settings

    @classmethod
    def read(cls, config: str | Path) -> ModelSettings:
        """The settings a ``.json`` config file states, read as data without building the model.

        Raises:
            WeightsError: the file cannot be read, or states settings out of range.
        """
        model = read_config_data(config).get("model")
        if not isinstance(model, dict):
            raise WeightsError(f"{Path(config).name}: no model in it")
        return cls.of(model)

    @property
    def score_thr(self) -> float:
        """The threshold stated, else :data:`FALLBACK_SCORE_THR`."""
        return FALLBACK_SCORE_THR if self.stated_score_thr is None else self.stated_score_thr

    @property
    def dedup(self):
        """A :class:`nailseg.dedup.MaskDedup` of the settings, or None (suppression off)."""
        from nailseg.dedup import MaskDedup

        return None if self.mask_dedup is None else MaskDedup(**self.mask_dedup)


@dataclass(frozen=True)
class ResolvedWeights:
    """Local files of one model, and where they came from (shown to the user)."""

    weights: Path
    config: Path
    source: str

    @cached_property
    def settings(self) -> ModelSettings:
        """The model's :class:`ModelSettings`, read from its config once (a ``.py`` config only
        when :func:`resolve_weights` accepted it).

        Raises:
            WeightsError: the config cannot be read or states settings out of range.
        """
        if self.config.suffix == ".py":
            return ModelSettings.of(load_model_config(self.config).model)
        return ModelSettings.read(self.config)


@dataclass(frozen=True)
class HubSpec:
    repo_id: str
    filename: str
    revision: str | None = None


def parse_hub_spec(spec: str) -> HubSpec:
    """Split ``hf://owner/repo[@revision]/path/to/file.safetensors`` into its parts.

    Only Hub-style names are accepted (letters, digits, ``._-``; no ``..``), so a spec can be shown
    back to people as it is.
    """
    m = _HUB_SPEC.fullmatch(spec)
    if not m or ".." in spec or not m["file"].endswith(".safetensors"):
        raise WeightsError("expected hf://owner/repo[@revision]/file.safetensors")
    return HubSpec(f"{m['owner']}/{m['repo']}", m["file"], m["rev"])


def weights_spec(spec: str | os.PathLike | None = None) -> str:
    """The spec in use: ``spec`` when given, else ``$NAILSEG_WEIGHTS``, else the bundled model."""
    return str(spec or os.environ.get(ENV_VAR) or BUNDLED_WEIGHTS)


def resolve_weights(spec: str | os.PathLike | None = None, allow_py_config: bool = False) -> ResolvedWeights:
    """Find (downloading from the Hub if needed) the weights and config a spec names.

    Args:
        spec: local path or ``hf://...``; default ``$NAILSEG_WEIGHTS``, then the bundled model.
        allow_py_config: accept a ``.py`` config beside local weights (it runs Python): only for
            specs typed by the machine's owner, e.g. on the command line.

    Raises:
        HubUnreachable: an ``hf://`` spec while the Hub cannot be reached and nothing is cached.
        WeightsError: a missing file, a file missing from the Hub repo, no config beside it.
    """
    from_env = not spec and bool(os.environ.get(ENV_VAR))
    spec = weights_spec(spec)
    if spec.startswith("hf://"):
        from nailseg.hub import download

        hub = parse_hub_spec(spec)
        weights = download(hub.repo_id, hub.filename, hub.revision)
        config = download(hub.repo_id, str(Path(hub.filename).with_suffix(".json")), hub.revision)
        return ResolvedWeights(weights, config, spec)
    weights = Path(spec).expanduser()
    if weights.suffix != ".safetensors":
        raise WeightsError(f"weights must be a .safetensors file, got {weights.name}")
    if not weights.is_file():
        raise WeightsError(f"weights file not found: {weights}")
    for config in [weights.with_suffix(".json")] + [weights.with_suffix(".py")] * (allow_py_config or from_env):
        if config.is_file():
            return ResolvedWeights(weights, config, str(weights))
    raise WeightsError(f"config {weights.with_suffix('.json').name} not found beside {weights.name}")


# --- configs as data ----------------------------------------------------------------------------


def _check_data(node, where: str = "config") -> None:
    """Refuse what would make mmengine import or run something: unknown types, other scopes."""
    if isinstance(node, dict):
        for key, value in node.items():
            # mmengine's own keys (``_scope_`` imports ``<scope>.registry``): only mmdet's scope.
            if not isinstance(key, str) or (key.startswith("_") and (key, value) != ("_scope_", "mmdet")):
                raise WeightsError(f"{where}: key {str(key)[:40]!r} is not accepted")
            if key == "type" and (not isinstance(value, str) or value not in ALLOWED_TYPES):
                raise WeightsError(f"{where}: type {str(value)[:60]!r} is not one this project builds")
            _check_data(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_data(value, f"{where}[{i}]")


def _drop_init(node):
    """The weights file holds every trained parameter: drop ``init_cfg`` (it may name a pickle)."""
    if isinstance(node, dict):
        return {k: _drop_init(v) for k, v in node.items() if k != "init_cfg"}
    return [_drop_init(v) for v in node] if isinstance(node, list) else node


def _tuples(step: dict) -> dict:
    """JSON has no tuples; mmcv's transforms want ``scale=(w, h)`` as one."""
    return {
        k: tuple(v) if isinstance(v, list) and all(isinstance(x, int | float) for x in v) else v
        for k, v in step.items()
    }


def inference_config(data: dict) -> dict:
    """The parts of a config that inference builds (model, test pipeline), checked and cleaned.

    Args:
        data: a config as plain data (e.g. parsed JSON); anything else in it is ignored.

    Returns:
        ``{"model": ..., "test_pipeline": [...], "default_scope": "mmdet"}``.

    Raises:
        WeightsError: a part is missing or would build something outside :data:`ALLOWED_TYPES`.
    """
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise WeightsError("config: no model in it")
    # The pipeline mmdet tests with; ``test_pipeline`` is only the variable a config usually fills it from.
    pipeline = (((data.get("test_dataloader") or {}).get("dataset")) or {}).get("pipeline")
    if pipeline is None:
        pipeline = data.get("test_pipeline")
    if not isinstance(pipeline, list) or not all(isinstance(s, dict) for s in pipeline):
        raise WeightsError("config: no test pipeline in it")
    model = _drop_init(data["model"])
    if isinstance(model.get("backbone"), dict) and "pretrained" in model["backbone"]:
        model["backbone"]["pretrained"] = False  # the weights file holds the trained backbone
    _check_data(model, "model")
    _check_data(pipeline, "test_pipeline")
    return {"model": model, "test_pipeline": [_tuples(s) for s in pipeline], "default_scope": "mmdet"}


def load_model_config(path: str | Path):
    """An ``mmengine.Config`` for inference from a ``.json`` (data) or, trusted, a ``.py`` config.

    Only :func:`resolve_weights` decides whether a ``.py`` may be used; this reads what it returns.
    """
    from mmengine.config import Config

    path = Path(path)
    if path.suffix == ".py":
        import nailseg.model  # noqa: F401 - what its custom_imports would import

        cfg = Config.fromfile(str(path), import_custom_modules=False)
        data = {"model": cfg.model.to_dict(), "test_pipeline": [dict(s) for s in cfg.test_dataloader.dataset.pipeline]}
        return Config(inference_config(json.loads(json.dumps(data))))
    return Config(read_inference_config(path))


def read_inference_config(path: str | Path) -> dict:
    """:func:`inference_config` of a ``.json`` config file; messages name the file."""
    data = read_config_data(path)
    try:
        return inference_config(data)
    except WeightsError as err:
        raise WeightsError(f"{Path(path).name}: {err}") from None


def read_config_data(path: str | Path) -> dict:
    """A ``.json`` config as plain data: standard JSON (finite numbers), at most ``MAX_CONFIG_BYTES``.

    Raises:
        WeightsError: unreadable, too large, not JSON, or not an object; the message names the file.
    """
    from nailseg.json_files import read_json

    path = Path(path)
    try:
        data = read_json(path, f"config {path.name}", MAX_CONFIG_BYTES)
    except OSError as err:
        raise WeightsError(f"config {path.name} cannot be read ({err.strerror or type(err).__name__})") from None
    except ValueError as err:
        raise WeightsError(str(err)) from None
    if not isinstance(data, dict):
        raise WeightsError(f"config {path.name} is not a JSON object")
    return data


# --- checkpoints and weights files --------------------------------------------------------------


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine's own training checkpoints.

    They hold, besides tensors, the message hub's ``HistoryBuffer`` (with references to its
    statistics methods, pickled as ``getattr(HistoryBuffer, "mean")``) and numpy arrays and
    scalars: plain data, allowed by name here so that no checkpoint is unpickled with code.
    ``getattr`` is allowed only for those methods.
    """
    import numpy as np
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    def history_method(owner, name):
        if owner is not HistoryBuffer or name not in ("min", "max", "current", "mean"):
            raise WeightsError(f"checkpoint refers to {getattr(owner, '__name__', '?')}.{name}")
        return getattr(owner, name)

    multiarray = np._core.multiarray
    torch.serialization.add_safe_globals(
        [
            HistoryBuffer,
            multiarray._reconstruct,
            multiarray.scalar,
            np.ndarray,
            np.dtype,
            *{type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "uint8", "bool")},
            (history_method, "builtins.getattr"),
        ]
    )


def load_checkpoint(path: str | Path) -> dict:
    """An mmengine training checkpoint, read with ``weights_only=True`` (see :func:`allow_mmengine_checkpoints`).

    Raises:
        WeightsError: the file holds something else than data (e.g. pickled code) or is no checkpoint.
    """
    import torch

    allow_mmengine_checkpoints()
    name = Path(path).name
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any refusal: the message is what the user needs
        raise WeightsError(f"{name} is not a weights-only mmengine checkpoint ({err.__class__.__name__})") from None
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{name} is not an mmengine checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def check_resumable(path: str | Path) -> None:
    """Refuse a checkpoint whose ``meta.config`` mmengine's ``Runner.resume`` would run as Python.

    mmengine writes its config as ``meta.cfg``; ``resume`` still executes ``meta.config`` (an
    mmcv 1.x key) through ``Config.fromstring(..., '.py')``. Only a hand-made checkpoint has one.
    """
    meta = load_checkpoint(path).get("meta")
    if isinstance(meta, dict) and "config" in meta:
        raise WeightsError(f"{Path(path).name} carries meta.config, which resuming would run as Python: refused")


def read_dumped_config(text, name: str = "checkpoint") -> dict:
    """A config as mmengine dumps it into a checkpoint (``meta.cfg``), read as data and never run.

    mmengine writes one ``name = value`` line per key, values made of literals, lists, tuples,
    ``{...}`` and ``dict(key=value)``. Only those are read: any other name, call, attribute,
    operator or import is refused, so a checkpoint from elsewhere cannot run code through its
    config (``Config.fromstring(text, '.py')`` would execute it).

    Raises:
        WeightsError: the text is not such a config; the message names the checkpoint and the line.
    """
    if not isinstance(text, str) or not text.strip():
        raise WeightsError(f"{name} carries no config (meta.cfg); was it written by mmengine?")
    if len(text) > MAX_CONFIG_BYTES:
        raise WeightsError(f"{name}: meta.cfg is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        data = {}
        for statement in ast.parse(text).body:
            match statement:
                case ast.Assign(targets=[ast.Name(id=key)], value=value):
                    data[key] = _literal(value, name)
                case _:
                    raise WeightsError(f"{name}: meta.cfg line {statement.lineno} is not `name = value`")
        return data
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise WeightsError(f"{name}: meta.cfg is not a config mmengine dumped ({err.__class__.__name__})") from None


def _literal(node: ast.AST, name: str):
    """The value of one node of a dumped config: plain data only (see :func:`read_dumped_config`)."""
    match node:
        case ast.Constant(value=str() | bool() | int() | None as value):
            return value
        case ast.Constant(value=float() as value) if math.isfinite(value):
            return value
        case ast.UnaryOp(op=ast.USub(), operand=ast.Constant(value=int() | float() as value) as operand):
            if not isinstance(value, bool):
                return -_literal(operand, name)
        case ast.List(elts=items):
            return [_literal(item, name) for item in items]
        case ast.Tuple(elts=items):
            return tuple(_literal(item, name) for item in items)
        case ast.Dict(keys=keys, values=values) if all(isinstance(k, ast.Constant) for k in keys):
            return {_key(k, name): _literal(v, name) for k, v in zip(keys, values)}
        case ast.Call(func=ast.Name(id="dict"), args=[], keywords=keywords) if all(k.arg for k in keywords):
            return {k.arg: _literal(k.value, name) for k in keywords}
    raise WeightsError(f"{name}: meta.cfg line {node.lineno}: {ast.unparse(node)[:60]!r} is not plain data")


def _key(node: ast.Constant, name: str) -> str | int:
    if isinstance(node.value, str) or (isinstance(node.value, int) and not isinstance(node.value, bool)):
        return node.value
    raise WeightsError(f"{name}: meta.cfg line {node.lineno}: a key must be a string or an integer")


def _portable_config(data: dict) -> dict:
    """A training config as its model's users need it: no data paths of this machine, no work dir,
    nothing about how the run was launched (processes, DDP), JSON types (tuples become lists)."""
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = data[loader].get("dataset") if isinstance(data.get(loader), dict) else None
        if isinstance(dataset, dict):
            dataset.update(data_root="", ann_file=Path(str(dataset.get("ann_file", ""))).name)
    for evaluator in ("val_evaluator", "test_evaluator"):
        if isinstance(data.get(evaluator), dict) and "ann_file" in data[evaluator]:
            data[evaluator]["ann_file"] = Path(str(data[evaluator]["ann_file"])).name
    data.update(work_dir=None, load_from=None)
    for key in ("custom_imports", "launcher", "model_wrapper_cfg"):  # nailseg registers its parts itself
        data.pop(key, None)
    return json.loads(json.dumps(data))


def _export_paths(checkpoint: Path, out: Path) -> tuple[Path, Path]:
    """``(weights, config)`` that :func:`export_weights` will write, refused if writing them loses data.

    Checked before anything is read or written: the weights are a ``.safetensors`` file, neither
    path is a folder, and neither is the checkpoint itself (``--out`` given the checkpoint's name
    would replace a training run's only copy).
    """
    if out.suffix != ".safetensors":
        raise WeightsError(f"the weights to write must be a .safetensors file, got {out.name}")
    config = out.with_suffix(".json")
    for path in (out, config):
        if path.is_dir():
            raise WeightsError(f"{path} is a folder: name the weights file to write (NAME.safetensors)")
        if path.exists() and Path(checkpoint).exists() and path.samefile(checkpoint):
            raise WeightsError(f"{path.name} is the checkpoint being exported: writing it would replace it")
    return out, config


def export_weights(checkpoint: str | Path, out: str | Path, half: bool = True, score_thr: float | None = None) -> Path:
    """Turn an mmengine training checkpoint into ``out`` (safetensors) and its config ``out.json``.

    Only the model's ``state_dict`` is kept (no optimizer, no history); floating tensors are stored
    as float16 when ``half`` (half the size). The config is the one the checkpoint was trained with,
    read as data (:func:`read_dumped_config`, nothing in it runs), with the machine's data paths
    and work dir cleared. ``score_thr``, when given, is recorded as the model's default threshold
    (``model.test_cfg.rcnn.default_score_thr``). Everything is checked before either file is
    written, and each is written atomically.

    Raises:
        WeightsError: an output that would lose data, a checkpoint that is not data or carries no
            usable config, a threshold out of range.
    """
    import torch
    from safetensors.torch import save

    from nailseg.files import write_atomic

    checkpoint = Path(checkpoint)
    out, config = _export_paths(checkpoint, Path(out))
    if score_thr is not None:
        checked_score_thr(score_thr)  # refuse a bad value before reading anything
    ckpt = load_checkpoint(checkpoint)
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    data = _portable_config(read_dumped_config(meta.get("cfg"), checkpoint.name))
    if score_thr is not None:
        _set_score_thr(data, score_thr)
    inference_config(data)  # refuse to publish what the app would refuse to load
    state = ckpt.get("state_dict", ckpt)
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in (state.items() if isinstance(state, dict) else ())
        if isinstance(v, torch.Tensor)
    }
    if not tensors:
        raise WeightsError(f"{checkpoint.name} holds no weights (state_dict)")
    weights = save(tensors, metadata={"format": "pt", "source": checkpoint.name})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(config, json.dumps(data, indent=1))
    write_atomic(out, weights)
    return out


def _set_score_thr(data: dict, score_thr: float) -> None:
    test_cfg = data["model"].setdefault("test_cfg", {})
    test_cfg.setdefault("rcnn", {})["default_score_thr"] = checked_score_thr(score_thr)


def record_score_thr(weights: str | Path, score_thr: float) -> Path:
    """Make ``score_thr`` the default threshold of ``weights``: written into the ``.json`` config
    beside them (atomically; the weights file is not touched). Returns the config's path."""
    from nailseg.files import write_atomic

    config = Path(weights).with_suffix(".json")
    data = read_config_data(config)
    if not isinstance(data.get("model"), dict):
        raise WeightsError(f"{config.name}: no model in it")
    _set_score_thr(data, score_thr)
    write_atomic(config, json.dumps(data, indent=1))
    return config


def check_safetensors(path: str | Path) -> Path:
    """``path`` if it is a ``.safetensors`` file whose header safetensors reads (no tensor is loaded).

    Raises:
        WeightsError: another suffix (a pickled ``.pth`` above all), or not a safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"weights must be a .safetensors file, got {path.name}: export a checkpoint first")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path.name} is not a readable safetensors file ({err})") from None
    return path


def load_state_dict(path: str | Path) -> dict:
    """Read a ``.safetensors`` weights file (no unpickling); float16 tensors come back as float32."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{Path(path).name} is not a readable safetensors file ({err})") from err
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}
