"""Train tab: start and watch one ``nailseg train`` run, then download, use or push its weights.

Training runs in its own process (:mod:`nailseg.jobs`), so segmentation stays responsive; a
``gr.Timer`` polls the job's files every two seconds, which also reattaches a reloaded page to
the running job. At the end the newest checkpoint is exported to ``.safetensors`` + ``.py``
(no pickles leave the server), which can be downloaded as a zip, loaded into the Segment tab
("use this model", no restart) or pushed to the Hugging Face Hub.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import tempfile
import zipfile
from pathlib import Path

import gradio as gr
import pandas as pd

from nailseg.jobs import JobError, JobStatus, TrainingJobs, TrainRequest
from nailseg.train import CONFIG_DIR, DEFAULT_CONFIG, REPO_ROOT

CONFIGS = {
    "Default model: EfficientNet-Lite0 Mask R-CNN (fast on CPU)": DEFAULT_CONFIG,
    "Seed model: Mask R-CNN R50-caffe FPN (needs a GPU to be practical)": CONFIG_DIR
    / "mask-rcnn_r50-caffe_fpn_ms_nails.py",
}
# Converted datasets the tab offers: any folder holding train.json under these roots.
CONVERTED_ROOT = Path(os.environ.get("NAILSEG_CONVERTED_DIR", Path(tempfile.gettempdir()) / "nailseg-converted"))
DATA_ROOTS = (CONVERTED_ROOT, REPO_ROOT / "data")
EXPORT_DIR = "export"
LOG_LINES = 15  # the log box shows them all, without scrolling
JOBS = TrainingJobs()


def data_choices(roots: tuple[Path, ...] = DATA_ROOTS) -> list[str]:
    """Folders written by ``nailseg convert`` (holding ``train.json``) under ``roots``, newest first."""
    found = [p.parent for root in roots if root.is_dir() for p in root.glob("*/train.json")]
    return [str(p) for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def refresh_choices(current: str | None):
    """The dataset list again (a dataset converted since the page was built), keeping the choice."""
    choices = data_choices()
    return gr.update(choices=choices, value=current or (choices[0] if choices else None))


def device_note() -> str:
    """One line on the hardware training will use."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: **{torch.cuda.get_device_name(0)}**; training runs on it."
    return ("No GPU here: training runs on the CPU. It works, but slowly: about 2.5 s per iteration at "
            "batch 4 with the default model on 2 cores (an hour per pass over 3,400 photos); the seed R50 "
            "is several times slower.")  # fmt: skip


def _clock(seconds: float | None) -> str:
    return str(dt.timedelta(seconds=int(seconds))) if seconds is not None else "–"


def progress_html(status: JobStatus) -> str:
    """A progress bar with iteration count and ETA."""
    pct = 100 * status.fraction
    if status.state == "idle":
        text = "No training yet."
    elif status.max_iters:
        text = f"{status.state}: iteration {status.iter} / {status.max_iters}"
        text += f", ETA {_clock(status.eta_s)}" if status.running else ""
    else:
        text = f"{status.state}: starting (building the model, loading the data)…" if status.running else status.state
    return (
        '<div style="border:1px solid #8884;border-radius:6px;height:22px;overflow:hidden">'
        f'<div style="width:{pct:.1f}%;height:100%;background:#3b82f6"></div></div>'
        f'<p id="train-progress-text" style="margin:4px 0">{text}</p>'
    )


def summary_markdown(status: JobStatus) -> str:
    """State, validation AP and checkpoint of a run, as Markdown."""
    if status.state == "idle":
        return ""
    lines = [f"**{status.state}** · work dir `{status.work_dir}`"]
    if status.state == "failed":
        lines.append(f"The training exited with code {status.returncode}; see the log below.")
    if status.metrics:
        ap = ", ".join(f"{k.removeprefix('coco/')} {v:.3f}" for k, v in status.metrics.items())
        lines.append(f"Validation AP: {ap}")
    if status.checkpoint:
        lines.append(f"Newest checkpoint: `{Path(status.checkpoint).name}`")
    return "\n\n".join(lines)


def loss_frame(status: JobStatus) -> pd.DataFrame:
    """``iter``/``loss`` columns for the loss curve (empty before the first logged iteration)."""
    # Typed even when empty: the plot picks its axis types from the first value it gets.
    iters, losses = zip(*status.losses, strict=True) if status.losses else ((), ())
    return pd.DataFrame({"iter": pd.Series(iters, dtype="int64"), "loss": pd.Series(losses, dtype="float64")})


def export_checkpoint(status: JobStatus) -> tuple[Path, Path]:
    """Export the run's newest checkpoint to ``<work dir>/export/<config>.safetensors`` and zip it.

    Reuses an export newer than the checkpoint. Returns ``(weights, zip)``; the zip holds the
    weights and their config ``.py``.
    """
    from nailseg.weights import export_weights

    if not status.checkpoint or status.running:
        raise gr.Error("no finished training with a checkpoint to export")
    work_dir, ckpt = Path(status.work_dir), Path(status.checkpoint)
    configs = sorted(work_dir.glob("*.py"))  # mmengine dumps the run's config as <config name>.py
    name = configs[0].stem if configs else "nailseg"
    weights = work_dir / EXPORT_DIR / f"{name}.safetensors"
    archive = weights.with_suffix(".zip")
    if not archive.is_file() or archive.stat().st_mtime < ckpt.stat().st_mtime:
        weights.parent.mkdir(exist_ok=True)
        export_weights(ckpt, weights)
        with zipfile.ZipFile(archive, "w") as zf:
            for path in (weights, weights.with_suffix(".py")):
                zf.write(path, path.name)
    return weights, archive


def _view(status: JobStatus):
    ended = status.state in ("finished", "stopped") and bool(status.checkpoint)
    return (
        progress_html(status),
        summary_markdown(status),
        loss_frame(status),
        "\n".join(status.log_tail[-LOG_LINES:]),
        gr.update(interactive=not status.running),
        gr.update(interactive=status.running),
        gr.update(visible=ended),
    )


def poll():
    """Timer tick: the job's state, read from its files (cheap)."""
    return _view(JOBS.status())


def start(config_label: str, data: str, epochs, batch_size, lr, overrides: str):
    """Start a training with the form's values; empty or 0 fields keep the config's own."""
    data = (data or "").strip()
    if not data or not (Path(data) / "train.json").is_file():
        raise gr.Error(f"no train.json in {data!r}: convert a dataset first (Dataset tab or `nailseg convert`)")
    config = CONFIGS.get(config_label, DEFAULT_CONFIG)
    try:
        options = tuple(shlex.split(overrides or ""))
    except ValueError as err:
        raise gr.Error(f"config overrides: {err}") from err
    if bad := [o for o in options if "=" not in o]:
        raise gr.Error(f"config overrides must be KEY=VALUE, got {bad[0]!r}")
    request = TrainRequest(data=data, work_dir=str(JOBS.new_work_dir(config)), config=str(config),
                           epochs=int(epochs) if epochs else None, batch_size=int(batch_size) if batch_size else None,
                           lr=float(lr) if lr else None, cfg_options=options)  # fmt: skip
    try:
        return _view(JOBS.start(request))
    except JobError as err:
        raise gr.Error(str(err)) from err


def stop():
    """Stop the running training (SIGTERM, then SIGKILL); its checkpoints stay."""
    return _view(JOBS.stop())


def download() -> str:
    """The exported weights and config, zipped (a copy in the app's scratch space, for Gradio)."""
    from nailseg.serving import scratch_dir

    archive = export_checkpoint(JOBS.status())[1]
    copy = scratch_dir() / archive.name
    shutil.copyfile(archive, copy)
    return str(copy)


def use_model() -> str:
    """Load the run's exported weights into the Segment tab, without a restart."""
    from nailseg.serving import STORE
    from nailseg.weights import WeightsError

    weights, _ = export_checkpoint(JOBS.status())
    try:
        return STORE.switch(str(weights))
    except WeightsError as err:
        raise gr.Error(str(err)) from err


def push(repo_id: str, token: str, private: bool) -> str:
    """Upload the run's exported weights, config and a model card to a Hub model repo."""
    from huggingface_hub.errors import HfHubHTTPError

    from nailseg.hub import push_model
    from nailseg.weights import WeightsError

    repo_id = (repo_id or "").strip()
    if repo_id.count("/") != 1:
        raise gr.Error("repo id must be OWNER/NAME")
    status = JOBS.status()
    weights, _ = export_checkpoint(status)
    try:
        result = push_model(repo_id, weights, token=(token or "").strip() or None, private=private,
                            metrics=status.metrics)  # fmt: skip
    except HfHubHTTPError as err:
        raise gr.Error(f"the Hub refused the upload: {err}") from err
    except WeightsError as err:  # HubUnreachable included
        raise gr.Error(str(err)) from err
    return f"Pushed: {result.commit_url}. Load it anywhere with `NAILSEG_WEIGHTS={result.spec}`."


def train_tab() -> None:
    """Build the Train tab inside the caller's ``gr.Tab``."""
    gr.Markdown(device_note(), elem_id="train-device")
    with gr.Row():
        config = gr.Radio(list(CONFIGS), value=next(iter(CONFIGS)), label="Model", scale=2)
        choices = data_choices()
        data = gr.Dropdown(choices, value=choices[0] if choices else None, allow_custom_value=True,
                           label="Data: a folder written by `nailseg convert` (a server path)",
                           elem_id="train-data", scale=3)  # fmt: skip
        refresh = gr.Button("↻ datasets", scale=0, min_width=100, size="sm", elem_id="train-data-refresh")
    with gr.Row():
        epochs = gr.Number(0, precision=0, minimum=0, label="Epochs (0: the config's schedule)")
        batch_size = gr.Number(4, precision=0, minimum=1, label="Batch size")
        lr = gr.Number(0, minimum=0, label="Learning rate (0: the config's)")
    overrides = gr.Textbox(label="Config overrides (optional)", placeholder="train_cfg.max_iters=100 ...")
    with gr.Row():
        start_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
        stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="train-stop")
    progress = gr.HTML(progress_html(JobStatus()), elem_id="train-progress")
    summary = gr.Markdown(elem_id="train-summary")
    curve = gr.LinePlot(loss_frame(JobStatus()), x="iter", y="loss", title="Training loss", height=260)
    log = gr.Textbox(label="Log (last lines)", lines=LOG_LINES, max_lines=LOG_LINES, elem_id="train-log")
    with gr.Group(visible=False) as finished:
        with gr.Row():
            download_btn = gr.Button("Export weights (.safetensors + config, zipped)", elem_id="train-export")
            use_btn = gr.Button("Use this model in the Segment tab", elem_id="train-use")
        weights_file = gr.File(label="Weights", interactive=False, height=90, elem_id="train-weights")
        use_msg = gr.Markdown()
        with gr.Row():
            repo_id = gr.Textbox(label="Hub repo id (OWNER/NAME)")
            token = gr.Textbox(label="Hub write token", type="password")
            private = gr.Checkbox(label="private repo")
        push_btn = gr.Button("Push to the Hugging Face Hub")
        push_msg = gr.Markdown()

    view = [progress, summary, curve, log, start_btn, stop_btn, finished]
    refresh.click(refresh_choices, data, data, api_name="train_data_choices")
    start_btn.click(start, [config, data, epochs, batch_size, lr, overrides], view, api_name="train_start",
                    concurrency_limit=1)  # fmt: skip
    stop_btn.click(stop, None, view, api_name="train_stop", concurrency_limit=1)
    # Reads a few small files: no queue slot needed, and no spinner every two seconds.
    gr.Timer(2.0).tick(poll, None, view, api_name="train_status", concurrency_limit=None, show_progress="hidden")
    download_btn.click(download, None, weights_file, api_name="train_export", concurrency_limit=1)
    use_btn.click(use_model, None, use_msg, api_name="train_use_model", concurrency_limit=1)
    push_btn.click(push, [repo_id, token, private], push_msg, api_name="train_push", concurrency_limit=1)
