"""Publishing a model on the Hugging Face Hub: which files go, the card, and the push.

A publication is the weights, their JSON config and a model card in one commit; what was pushed is
then loadable anywhere as ``hf://<repo_id>/<weights file name>`` (see
:func:`nailseg.weights.resolve_weights`), e.g. ``NAILSEG_WEIGHTS=hf://me/nails/model.safetensors``.
The file choice and the card are pure (:func:`hub_files`, :func:`model_card`); the upload is
:func:`nailseg.hub.upload`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nailseg.hub import upload
from nailseg.paths import BUNDLED_WEIGHTS
from nailseg.weights import ModelSettings, WeightsError, check_safetensors, read_inference_config

CARD_NAME = "README.md"
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
        card = model_card(repo_id, weights.name, metrics, ModelSettings.read(config).stated_score_thr).encode()
    return [(weights.name, weights), (config.name, config), (CARD_NAME, card)]


def push_model(
    repo_id: str,
    weights: str | Path = BUNDLED_WEIGHTS,
    token: str | None = None,
    private: bool = False,
    metrics: dict[str, float] | None = None,
) -> PushResult:
    """Publish ``weights`` (a local ``.safetensors`` with its ``.json`` config beside it) on the Hub:
    weights, config and card (:func:`hub_files`) in one commit to ``repo_id`` (``$HF_ENDPOINT`` is honoured).

    Args:
        token: a write token; default ``$HF_TOKEN`` or the saved login. Never logged.
        private: create the repo private (an existing repo keeps its visibility).
        metrics: validation AP for a generated card.

    Raises:
        WeightsError: missing files.
        HubUnreachable: no connection to the Hub.
        HubRefused: the Hub refused (bad token, no write access...); the message never holds the token.
    """
    files = hub_files(weights, repo_id, metrics)
    url = upload(repo_id, files, f"Upload {Path(weights).name} with nailseg push", token, private)
    return PushResult(url, f"hf://{repo_id}/{Path(weights).name}", tuple(n for n, _ in files))
