"""Where weights come from and how they are stored: safetensors, never pickles.

A weights spec is a local path or ``hf://owner/repo[@revision]/filename``; the config is the
``.py`` file with the same stem beside it (same folder, or same Hub repo and revision).
Precedence everywhere: an explicit spec > ``$NAILSEG_WEIGHTS`` > the bundled model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_WEIGHTS = REPO_ROOT / "checkpoints" / "mask-rcnn_effilite0_fpn-128_nails.safetensors"
ENV_VAR = "NAILSEG_WEIGHTS"


class WeightsError(RuntimeError):
    """Weights that cannot be found or loaded; the message says which and why."""


class HubUnreachable(WeightsError):
    """The Hub could not be contacted (offline); callers may fall back to the bundled model."""


@dataclass(frozen=True)
class ResolvedWeights:
    """Local files of one model, and where they came from (shown to the user)."""

    weights: Path
    config: Path
    source: str


@dataclass(frozen=True)
class HubSpec:
    repo_id: str
    filename: str
    revision: str | None = None


def parse_hub_spec(spec: str) -> HubSpec:
    """Split ``hf://owner/repo[@revision]/path/to/file`` into its parts."""
    rest = spec.removeprefix("hf://")
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts):
        raise WeightsError(f"expected hf://owner/repo[@revision]/filename, got {spec!r}")
    repo, revision = parts[1], None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    return HubSpec(f"{parts[0]}/{repo}", "/".join(parts[2:]), revision)


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """A TCP connection to the Hub opens (assumed true behind a proxy, which we cannot probe)."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    url = urlsplit(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def _download(spec: HubSpec, filename: str) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # Offline, hf_hub_download retries for ~25 s before giving up; the cache answers at once.
    offline = not _hub_reachable(constants.ENDPOINT)
    try:
        return Path(hf_hub_download(spec.repo_id, filename, revision=spec.revision, local_files_only=offline))
    except LocalEntryNotFoundError as err:  # offline and not cached (a subclass of EntryNotFoundError)
        raise HubUnreachable(f"cannot reach the Hugging Face Hub for {spec.repo_id}/{filename}") from err
    except (RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise WeightsError(f"{filename} not found in Hub repo {spec.repo_id}: {err}") from err


def resolve_weights(spec: str | os.PathLike | None = None) -> ResolvedWeights:
    """Find (downloading from the Hub if needed) the weights and config a spec names.

    Raises:
        HubUnreachable: an ``hf://`` spec while the Hub cannot be reached and nothing is cached.
        WeightsError: a missing local file, a file missing from the Hub repo, no config beside it.
    """
    spec = str(spec or os.environ.get(ENV_VAR) or BUNDLED_WEIGHTS)
    if spec.startswith("hf://"):
        hub = parse_hub_spec(spec)
        weights = _download(hub, hub.filename)
        config = _download(hub, str(Path(hub.filename).with_suffix(".py")))
        return ResolvedWeights(weights, config, spec)
    weights = Path(spec).expanduser()
    if not weights.is_file():
        raise WeightsError(f"weights file not found: {weights}")
    config = weights.with_suffix(".py")
    if not config.is_file():
        raise WeightsError(f"config {config.name} not found beside {weights}")
    return ResolvedWeights(weights, config, str(weights))


def export_weights(checkpoint: str | Path, out: str | Path, half: bool = True) -> Path:
    """Turn an mmengine training checkpoint into ``out`` (safetensors) and its config ``out.py``.

    Only the model's ``state_dict`` is kept (no optimizer, no pickled history); floating tensors
    are stored as float16 when ``half`` (half the size). The config is the one the checkpoint
    was trained with, flattened into one file, with the machine's data paths cleared.
    The checkpoint itself is a pickle: export only checkpoints you trained.
    """
    import torch
    from mmengine.config import Config
    from safetensors.torch import save_file

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = ckpt.get("state_dict", ckpt)
    out = Path(out)
    cfg_text = ckpt.get("meta", {}).get("cfg")
    if not cfg_text:
        raise WeightsError(f"{checkpoint} carries no config (meta.cfg); was it written by mmengine?")
    cfg = Config.fromstring(cfg_text, ".py")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader):
            cfg[loader].dataset.update(data_root="", ann_file=Path(cfg[loader].dataset.ann_file).name)
    for evaluator in ("val_evaluator", "test_evaluator"):
        if cfg.get(evaluator):
            cfg[evaluator].ann_file = Path(cfg[evaluator].ann_file).name
    cfg.work_dir = cfg.load_from = None
    cfg.dump(str(out.with_suffix(".py")))
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
    }
    save_file(tensors, str(out), metadata={"format": "pt", "source": Path(checkpoint).name})
    return out


def load_state_dict(path: str | Path) -> dict:
    """Read weights without unpickling: ``.safetensors``, or ``.pth`` through ``weights_only``.

    float16 tensors come back as float32.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - the message is what the user needs
            raise WeightsError(
                f"{path.name} is not a weights-only file ({err.__class__.__name__}); "
                "export it with `nailseg export`"
            ) from err
        state = state.get("state_dict", state)
    return {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}
