"""Training: a thin wrapper over mmengine's ``Runner`` that points a config at converted data.

``build_config`` does everything that needs no training (so it is tested on its own);
``train`` hands the result to ``Runner.from_cfg(cfg).train()``.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import warnings
from pathlib import Path

from nailseg.datasets import load_coco
from nailseg.distributed import configure, init_cpu_process_group
from nailseg.files import write_atomic
from nailseg.hub import reachable
from nailseg.paths import DEFAULT_CONFIG
from nailseg.precision import choose_precision, register_channels_last_hook, register_optim_wrapper

MAX_LR = 1.0  # the configs here train at 0.02 (SGD); above 1 any of them diverges
# A Unix socket's path holds at most 107 bytes. DataLoader workers hand batches over sockets that
# multiprocessing makes in the temp folder (``pymp-XXXXXXXX/listener-XXXXXXXX``, 34 bytes more): under
# a longer temp folder they fail with "AF_UNIX path too long" and the run waits for them forever.
MAX_TEMP_DIR = 70


def use_short_temp_dir() -> str:
    """Point this process's temp folder, and its children's, at a short one when it is too long
    for a socket's path (:data:`MAX_TEMP_DIR`). Returns the temp folder in use."""
    current = tempfile.gettempdir()
    if len(os.fsencode(current)) <= MAX_TEMP_DIR:
        return current
    for candidate in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            tempfile.tempdir = os.environ["TMPDIR"] = candidate
            return candidate
    warnings.warn(f"the temp folder {current} is too long for sockets: data loading may fail", stacklevel=2)
    return current


def _count_images(ann_file: Path) -> tuple[int, int, str]:
    """Photos, annotated photos and the recorded photos folder of a COCO file, its shape checked."""
    coco = load_coco(ann_file)
    annotated = len({a["image_id"] for a in coco["annotations"]})
    return len(coco["images"]), annotated, coco.get("info", {}).get("dataset_root", "")


def _rescale_schedule(cfg, factor: float, by_epoch: bool) -> None:
    """Stretch the lr schedule entries counted in the loop's unit by ``factor``."""
    for sched in cfg.param_scheduler:
        if sched.get("by_epoch", True) != by_epoch:
            continue
        for key in ("begin", "end", "T_max"):
            if sched.get(key) is None or sched[key] >= 2**30:  # absent, or mmengine's "until the end"
                continue
            scaled = round(sched[key] * factor)
            sched[key] = scaled if key == "begin" else max(1, scaled)
        if "milestones" in sched:
            sched["milestones"] = [max(1, round(m * factor)) for m in sched["milestones"]]


def build_config(
    config: str | Path = DEFAULT_CONFIG,
    data: str | Path = "data/coco",
    work_dir: str | Path | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    cfg_options: dict | None = None,
    load_from: str | Path | None = None,
    launcher: str | None = None,
    world_size: int = 1,
    minutes: float | None = None,
    precision: str | None = None,
):
    """Load a config and point it at the output of ``nailseg convert``.

    Args:
        config: config file (``configs/*.py``).
        data: folder holding ``train.json`` and ``valid.json``; the photos are found through the
            ``dataset_root`` recorded in them.
        work_dir: where logs and checkpoints go (default: the config's ``work_dir``, else
            ``work_dirs/<config name>``).
        epochs: passes over the training photos; iteration-based configs are converted to
            iterations (of ``batch_size * world_size`` photos) and their lr schedule stretched to match.
        batch_size: photos per iteration and process (per GPU).
        lr: optimizer learning rate.
        cfg_options: further ``key.sub=value`` overrides, applied last.
        load_from: weights to start from instead of the config's ``load_from``: a training
            checkpoint of yours (``.pth``) or exported weights (``.safetensors``).
        launcher: ``pytorch`` (workers started by torchrun) or ``slurm`` (by ``srun``) for a
            distributed run, see :func:`nailseg.distributed.configure`; None for one process.
        world_size: processes in the whole run (GPUs, or CPU processes).
        minutes: train for this wall-clock time (:class:`nailseg.schedule.TimeBudgetHook`) instead of
            the config's lr schedule; iteration-based configs only. The iterations are unbounded
            unless ``epochs`` bounds them too.
        precision: ``fp32``, ``bf16`` or ``auto`` (default ``$NAILSEG_PRECISION``, else ``auto``):
            on a CPU, ``bf16`` trains the convolution-heavy parts under bfloat16 autocast
            (``CpuBf16OptimWrapper``, :mod:`nailseg.precision`); ``auto`` where the CPU computes
            bfloat16 natively. A GPU run keeps the config's optimizer wrapper.

    Returns:
        An ``mmengine.Config`` ready for ``Runner.from_cfg``.
    """
    from mmengine.config import Config

    _check_positive((("epochs", epochs), ("batch size", batch_size), ("learning rate", lr), ("minutes", minutes)))
    if lr is not None and lr > MAX_LR:
        raise ValueError(f"learning rate must be at most {MAX_LR:g}, got {lr}")
    config, data = Path(config), Path(data).resolve()
    cfg = Config.fromfile(str(config))
    # mmdet's rule: the command line's, then the config's own, then work_dirs/<config name>.
    cfg.work_dir = str(work_dir or cfg.get("work_dir") or Path("work_dirs") / config.stem)
    n_annotated = _point_at_data(cfg, data)
    if batch_size:
        cfg.train_dataloader.batch_size = batch_size
    if lr:
        cfg.optim_wrapper.optimizer.lr = lr
    # Every process takes its own batch_size photos per iteration (mmengine shards by rank).
    _set_schedule(cfg, config, epochs, minutes, n_annotated / (cfg.train_dataloader.batch_size * world_size))
    if _training_precision(precision) == "bf16":
        cfg.optim_wrapper.type = "CpuBf16OptimWrapper"
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if load_from:
        cfg.load_from = str(load_from)
    if launcher:
        configure(cfg, launcher)
    _drop_unreachable_downloads(cfg)
    return cfg


def _check_positive(named: tuple[tuple[str, float | None], ...]) -> None:
    """Each given ``(name, value)`` positive and finite (0 would otherwise mean "the config's own")."""
    for name, value in named:
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")


def _point_at_data(cfg, data: Path) -> int:
    """Point the config's loaders and evaluators at ``nailseg convert``'s output in ``data``; no
    validation where it holds no validation photo. Returns the number of annotated training photos."""
    train_json, valid_json = data / "train.json", data / "valid.json"
    if not train_json.is_file():
        raise FileNotFoundError(f"{train_json} not found: run `nailseg convert ROOT --out {data}` first")
    _, n_annotated, dataset_root = _count_images(train_json)
    if n_annotated == 0:
        raise ValueError(f"{train_json} has no annotated photo to train on")
    if not dataset_root or not Path(dataset_root).is_dir():
        raise FileNotFoundError(f"photos folder {dataset_root!r} recorded in {train_json} does not exist")
    for loader, ann in (
        ("train_dataloader", train_json),
        ("val_dataloader", valid_json),
        ("test_dataloader", valid_json),
    ):
        cfg[loader].dataset.data_root = dataset_root
        cfg[loader].dataset.ann_file = str(ann)
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = str(valid_json)
    if not valid_json.is_file() or not _count_images(valid_json)[0]:
        # Converted with --valid-fraction 0: train without validation.
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    return n_annotated


def _set_schedule(cfg, config: Path, epochs: int | None, minutes: float | None, iters_per_epoch: float) -> None:
    """``epochs`` passes (an iteration-based config's schedule stretched to match, at
    ``iters_per_epoch``, rounded up), or ``minutes`` on the clock."""
    iter_based = cfg.train_cfg.get("type") == "IterBasedTrainLoop"
    if epochs:
        if iter_based:
            per_epoch = math.ceil(iters_per_epoch)
            new = epochs * per_epoch
            _rescale_schedule(cfg, new / cfg.train_cfg.max_iters, by_epoch=False)
            cfg.train_cfg.max_iters = new
            cfg.train_cfg.val_interval = min(per_epoch, new)
            # At least one checkpoint per epoch, and one per 100 iterations at most.
            ckpt = cfg.default_hooks.checkpoint
            ckpt.interval = min(ckpt.get("interval", per_epoch), per_epoch)
        else:
            _rescale_schedule(cfg, epochs / cfg.train_cfg.max_epochs, by_epoch=True)
            cfg.train_cfg.max_epochs = epochs
    if minutes:
        if not iter_based:
            raise ValueError(f"--minutes needs an iteration-based config (IterBasedTrainLoop); {config} is not")
        cfg.param_scheduler = None
        cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="TimeBudgetHook", minutes=minutes)]
        if not epochs:
            cfg.train_cfg.max_iters = 10**9  # the clock ends it


def _training_precision(requested: str | None) -> str:
    """``bf16`` or ``fp32`` for training here: a CPU run follows :func:`choose_precision`, a GPU run is ``fp32``."""
    import torch

    return choose_precision("cuda" if torch.cuda.is_available() else "cpu", requested)


def _drop_unreachable_downloads(cfg) -> None:
    """Offline, a pretrained URL would stop training before it starts; warn and go without."""
    load_from = cfg.get("load_from")
    if isinstance(load_from, str) and load_from.startswith("http"):
        from torch.hub import get_dir

        cached = Path(get_dir()) / "checkpoints" / load_from.rsplit("/", 1)[-1]
        if not cached.is_file() and not reachable(load_from):
            warnings.warn(f"cannot reach {load_from}; training without it (load_from=None)", stacklevel=2)
            cfg.load_from = None
    init = cfg.model.get("backbone", {}).get("init_cfg") or {}
    checkpoint = init.get("checkpoint", "") if isinstance(init, dict) else ""
    if checkpoint.startswith("open-mmlab://") and not reachable("https://download.openmmlab.com"):
        warnings.warn(f"cannot reach OpenMMLab for {checkpoint}; backbone starts from random weights", stacklevel=2)
        cfg.model.backbone.init_cfg = None


def _loadable(load_from: str | None, work_dir: Path) -> str | None:
    """``load_from`` as mmengine can read it with ``weights_only=True``.

    Exported ``.safetensors`` weights become a weights-only ``.pth`` in ``work_dir``; a training
    checkpoint (``.pth``) is read as it is, through :func:`nailseg.weights.allow_mmengine_checkpoints`,
    once read here first so that anything but data is refused with a message of ours (mmengine
    never runs a config it loads from; only resuming would, see :func:`nailseg.weights.check_resumable`).
    """
    from nailseg.weights import load_checkpoint

    if not load_from or str(load_from).startswith(("http://", "https://")):
        return load_from
    if not Path(load_from).is_file():
        raise FileNotFoundError(
            f"load_from {load_from} not found (relative paths start at {Path.cwd()}); name the weights to start "
            "from with --load-from"
        )
    if not str(load_from).endswith(".safetensors"):
        load_checkpoint(load_from)
        return load_from
    import torch

    from nailseg.weights import load_state_dict

    work_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"state_dict": load_state_dict(load_from)}, buffer)
    # Atomic: every process of a distributed run writes the same file, and may read it at once.
    return str(write_atomic(work_dir / f"{Path(load_from).stem}.init.pth", buffer.getvalue()))


def train(cfg, resume: bool = False) -> Path:
    """Run training; with ``resume`` continue from the newest checkpoint in ``cfg.work_dir`` (if any).

    In a distributed run (``cfg.launcher`` set by :func:`build_config`) every process calls this;
    rank 0 alone writes the checkpoints and the log.

    Returns:
        Path of the newest checkpoint.
    """
    from mmengine.runner import Runner

    import nailseg.model  # noqa: F401 - registers the backbone and mask head
    import nailseg.schedule  # noqa: F401 - registers TimeBudgetHook (--minutes)
    from nailseg.weights import allow_mmengine_checkpoints, check_resumable

    register_optim_wrapper()  # CpuBf16OptimWrapper, for --precision bf16
    register_channels_last_hook()  # ChannelsLastHook, in the default config's custom_hooks
    use_short_temp_dir()  # before any DataLoader worker starts

    # mmengine resumes from the checkpoint its ``last_checkpoint`` file names; with none saved yet
    # (a run stopped before its first checkpoint) there is nothing to resume: start as asked,
    # from ``load_from``, instead of from scratch.
    cfg.resume = bool(resume) and (Path(cfg.work_dir) / "last_checkpoint").is_file()
    if cfg.resume:
        check_resumable((Path(cfg.work_dir) / "last_checkpoint").read_text().strip())
    cfg.load_from = None if cfg.resume else _loadable(cfg.get("load_from"), Path(cfg.work_dir))
    # mmengine reads checkpoints with torch.load's default, weights_only=True: name the plain
    # data types its own checkpoints hold, so no pickle is ever trusted with code.
    allow_mmengine_checkpoints()
    init_cpu_process_group(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    last = Path(cfg.work_dir) / "last_checkpoint"
    return Path(last.read_text().strip()) if last.is_file() else Path(cfg.work_dir)
