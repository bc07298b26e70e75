"""Where NailSeg's files live: one resolver for the bundled configs and model, and for run data.

``configs/`` and ``checkpoints/`` sit beside the package in a source checkout and inside it
(``nailseg/configs``, ``nailseg/checkpoints``, package data) after ``pip install .``.

Run data (kept datasets, training work dirs, the Hub cache) goes to Hugging Face Spaces'
persistent storage ``/data`` when it exists and is writable, else to the usual places; each
place can be set with an environment variable (``NAILSEG_*``, listed in the README).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _resource(name: str) -> Path:
    installed = PACKAGE_DIR / name
    return installed if installed.is_dir() else PACKAGE_DIR.parent / name


CONFIG_DIR = _resource("configs")
CHECKPOINT_DIR = _resource("checkpoints")
DEFAULT_CONFIG = CONFIG_DIR / "mask-rcnn_effilite0_fpn-128_nails.py"
BUNDLED_WEIGHTS = CHECKPOINT_DIR / "mask-rcnn_effilite0_fpn-128_nails.safetensors"


def persistent_root() -> Path | None:
    """``/data/nailseg`` on a host with persistent storage at ``/data`` (Spaces), else None."""
    data = Path(os.environ.get("NAILSEG_PERSISTENT_DIR", "/data"))
    return data / "nailseg" if data.is_dir() and os.access(data, os.W_OK) else None


def work_root() -> Path:
    """Training work dirs of the app: ``$NAILSEG_WORK_DIRS``, else persistent storage, else ``./work_dirs``."""
    if env := os.environ.get("NAILSEG_WORK_DIRS"):
        return Path(env)
    persistent = persistent_root()
    return persistent / "work_dirs" if persistent else Path.cwd() / "work_dirs"


def converted_root() -> Path:
    """Datasets the app keeps for training: ``$NAILSEG_CONVERTED_DIR``, else persistent storage, else temp."""
    if env := os.environ.get("NAILSEG_CONVERTED_DIR"):
        return Path(env)
    persistent = persistent_root()
    return persistent / "converted" if persistent else Path(tempfile.gettempdir()) / "nailseg-converted"


def keep_hours() -> float:
    """Hours a kept dataset or a finished app training stays (``$NAILSEG_KEEP_HOURS``, default 24)."""
    return float(os.environ.get("NAILSEG_KEEP_HOURS", "24"))


def hub_cache_dir() -> Path | None:
    """The Hub cache on persistent storage, unless ``$HF_HOME``/``$HF_HUB_CACHE`` say otherwise; None: the default."""
    persistent = persistent_root()
    if persistent and not (os.environ.get("HF_HOME") or os.environ.get("HF_HUB_CACHE")):
        return persistent / "hf_home" / "hub"
    return None
