"""The Hugging Face Hub: downloading weights into its cache, and publishing them.

Publishing uploads weights, their JSON config and a model card in one commit; what was pushed is
then loadable anywhere as ``hf://<repo_id>/<weights file name>`` (see
``nailseg.weights.resolve_weights``), e.g. ``NAILSEG_WEIGHTS=hf://me/nails/model.safetensors``.
The file choice and the card are pure (``hub_files``, ``model_card``); ``push_model`` does the I/O.
A token (``$HF_TOKEN``, e.g. a Space secret) is handed to ``huggingface_hub`` and never printed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nailseg.paths import BUNDLED_WEIGHTS, hub_cache_dir
from nailseg.weights import HubUnreachable, WeightsError

CARD_NAME = "README.md"
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
_METRIC_NAMES = {
    "coco/bbox_mAP": "box AP",
    "coco/bbox_mAP_50": "box AP50",
    "coco/segm_mAP": "mask AP",
    "coco/segm_mAP_50": "mask AP50",
}


@dataclass(frozen=True)
class PushResult:
    """Where the files went: the commit's URL, the ``hf://`` spec to load them, the files' names."""

    commit_url: str
    spec: str
    files: tuple[str, ...]


def reachable(url: str, timeout: float = 3.0) -> bool:
    """A TCP connection to ``url``'s host opens (assumed true behind a proxy, which we cannot probe)."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(k) for k in _PROXY_VARS):
        return True
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout).close()
        return True
    except (OSError, ValueError):
        return False


def download(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """A file of a Hub model repo, from the local Hub cache or downloaded into it.

    Raises:
        HubUnreachable: offline and not cached.
        WeightsError: the repo, revision or file does not exist.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # Offline, hf_hub_download retries for ~25 s before giving up; the cache answers at once.
    offline = not reachable(constants.ENDPOINT)
    try:
        return Path(
            hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache_dir(), local_files_only=offline)
        )
    except LocalEntryNotFoundError as err:  # offline and not cached (a subclass of EntryNotFoundError)
        raise HubUnreachable(f"cannot reach the Hugging Face Hub for {repo_id}/{filename}") from err
    except (RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise WeightsError(f"{filename} not found in Hub repo {repo_id}") from err


def model_card(
    repo_id: str, weights_name: str, metrics: dict[str, float] | None = None, score_thr: float | None = None
) -> str:
    """A minimal model card (Markdown with Hub metadata) for weights without a README of their own.

    Args:
        repo_id: ``owner/name`` the card is written for (it shows how to load the weights).
        weights_name: the weights file's name in the repo.
        metrics: validation COCO AP (0-1) keyed like mmengine's (``coco/segm_mAP``...), if known.
        score_thr: the default score threshold the config states, if any.
    """
    stem = Path(weights_name).stem
    lines = [
        "---",
        "tags:",
        "- image-segmentation",
        "- instance-segmentation",
        "- mmdetection",
        "- nailseg",
        "pipeline_tag: image-segmentation",
        "---",
        "",
        f"# {stem}",
        "",
        "Fingernail instance segmentation (one mask and one box per nail): a Mask R-CNN trained with",
        "NailSeg (mmdetection 3.x).",
        "",
        f"- `{weights_name}`: the weights (safetensors, no pickled code);",
        f"- `{stem}.json`: the mmdetection config they were trained with (data, no code).",
        "",
        "## Use",
        "",
        "```bash",
        f"NAILSEG_WEIGHTS=hf://{repo_id}/{weights_name} python app.py",
        f"nailseg predict photo.jpg --out out/ --weights hf://{repo_id}/{weights_name}",
        "```",
        "",
        f"Default score threshold: {score_thr:g}, chosen by F1 on the validation photos (the config's "
        "`test_cfg.rcnn.default_score_thr`)."
        if score_thr
        else "The config states no default score threshold: NailSeg uses 0.5.",
    ]
    shown = {name: metrics[key] for key, name in _METRIC_NAMES.items() if metrics and key in metrics}
    if shown:
        lines += ["", "## Validation", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.3f} |" for name, value in shown.items()]
        lines += ["", "COCO AP on the validation split of the training run, as logged by mmengine."]
    return "\n".join(lines) + "\n"


def hub_files(
    weights: str | Path, repo_id: str, metrics: dict[str, float] | None = None
) -> list[tuple[str, bytes | Path]]:
    """The ``(path in repo, content)`` pairs to upload for ``weights``.

    The weights, the ``.json`` config with the same stem beside them, and ``README.md`` beside them
    when there is one (``checkpoints/README.md`` for the bundled model), else a generated card.
    Only safetensors and JSON go: weights with another suffix (a pickled ``.pth``) are refused,
    and so is a config the app would refuse to load.

    Raises:
        WeightsError: the weights or their config are missing, or not what they must be.
    """
    from nailseg.weights import check_safetensors, read_inference_config

    weights = Path(weights)
    config = weights.with_suffix(".json")
    if not weights.is_file():
        raise WeightsError(f"weights file not found: {weights}")
    check_safetensors(weights)
    if not config.is_file():
        raise WeightsError(f"config {config.name} not found beside {weights}")
    read_inference_config(config)
    card_file = weights.parent / CARD_NAME
    if card_file.is_file():
        card: bytes | Path = card_file
    else:
        from nailseg.inference import read_score_thr

        card = model_card(repo_id, weights.name, metrics, read_score_thr(config)).encode()
    return [(weights.name, weights), (config.name, config), (CARD_NAME, card)]


def push_model(
    repo_id: str,
    weights: str | Path = BUNDLED_WEIGHTS,
    token: str | None = None,
    private: bool = False,
    metrics: dict[str, float] | None = None,
) -> PushResult:
    """Create ``repo_id`` if needed (a model repo) and upload weights, config and card in one commit.

    Args:
        repo_id: ``owner/name`` on the Hub (``$HF_ENDPOINT`` is honoured).
        weights: local ``.safetensors`` with its ``.json`` config beside it.
        token: a write token; default ``$HF_TOKEN`` or the saved login. Never logged.
        private: create the repo private (an existing repo keeps its visibility).
        metrics: validation AP for a generated card.

    Raises:
        WeightsError: missing files.
        HubUnreachable: no connection to the Hub.
        HubRefused: the Hub refused (bad token, no write access...); the message never holds the token.
    """
    from httpx2 import TransportError  # huggingface_hub's HTTP client
    from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    files = hub_files(weights, repo_id, metrics)
    token = token or None
    secret = token or get_token()  # what huggingface_hub will send: kept out of every message
    api = HfApi(token=token)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes) else str(content))
        for name, content in files
    ]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(repo_id, operations, commit_message=f"Upload {Path(weights).name} with nailseg push")
    except TransportError as err:
        raise HubUnreachable(redact(f"cannot reach the Hub at {constants.ENDPOINT}: {err}", secret)) from None
    except HfHubHTTPError as err:
        raise HubRefused(redact(f"the Hub refused the upload: {err}", secret)) from None
    return PushResult(str(info.commit_url), f"hf://{repo_id}/{Path(weights).name}", tuple(n for n, _ in files))


class HubRefused(RuntimeError):
    """The Hub answered but refused (bad token, no write access, bad repo id)."""


def redact(message: str, secret: str | None) -> str:
    """``message`` with ``secret`` (a token) replaced by ``***``."""
    return message.replace(secret, "***") if secret else message
