"""Train tab: start and watch one ``nailseg train`` run, then download, use or push its weights.

Everything here changes the server for every visitor, so every action is the owner's
(:mod:`nailseg.access`). Training runs in its own process (:mod:`nailseg.jobs`), so segmentation
stays responsive; a ``gr.Timer`` polls the job's files every two seconds, which also reattaches
a reloaded page to the running job. At the end the newest checkpoint is exported to
``.safetensors`` + ``.json`` (no pickles leave the server), with its default score threshold
chosen by F1 on the run's validation photos, and can be downloaded as a zip, loaded into the
Segment tab ("use this model", no restart) or pushed to the Hugging Face Hub.

Nothing typed here names a server path: datasets, configs and starting weights are picked from
lists the server makes, and config overrides are limited to :data:`OVERRIDES`.
"""

from __future__ import annotations

import datetime as dt
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd

from nailseg import access
from nailseg.distributed import gpu_count
from nailseg.files import write_zip
from nailseg.jobs import JobError, JobStatus, TrainingJobs, TrainRequest
from nailseg.paths import BUNDLED_WEIGHTS, CONFIG_DIR, DEFAULT_CONFIG, converted_root
from nailseg.serving import ModelStore, code, number, scratch_dir

if TYPE_CHECKING:
    from gradio.events import Dependency

CONFIGS = {
    "Default model: EfficientNet-Lite0 Mask R-CNN (fast on CPU)": DEFAULT_CONFIG,
    "Seed model: Mask R-CNN R50-caffe FPN (needs a GPU to be practical)": CONFIG_DIR
    / "mask-rcnn_r50-caffe_fpn_ms_nails.py",
}
FROM_CONFIG, FROM_BUNDLED = "the config's own start (ImageNet backbone)", "the bundled model (fine-tune it)"
# Config overrides a visitor-facing form may pass on: key -> (type, lowest, highest). No paths.
OVERRIDES = {
    "train_cfg.max_iters": (int, 1, 1_000_000),
    "train_cfg.max_epochs": (int, 1, 10_000),
    "train_cfg.val_interval": (int, 1, 1_000_000),
    "optim_wrapper.optimizer.lr": (float, 1e-7, 1.0),
    "optim_wrapper.optimizer.momentum": (float, 0.0, 1.0),
    "optim_wrapper.optimizer.weight_decay": (float, 0.0, 1.0),
    "default_hooks.checkpoint.interval": (int, 1, 1_000_000),
    "default_hooks.logger.interval": (int, 1, 100_000),
    "randomness.seed": (int, 0, 2**31 - 1),
}
EXPORT_DIR = "export"
THRESHOLD_PHOTOS = 200  # validation photos the exported model's threshold is chosen on (~1 min on a CPU)
LOG_LINES = 15  # the log box shows them all, without scrolling


def data_roots() -> tuple[Path, ...]:
    """Where converted datasets are looked for: the app's kept ones, and ``./data`` (``nailseg convert``)."""
    return converted_root(), Path.cwd() / "data"


def data_choices(roots: tuple[Path, ...] | None = None) -> dict[str, Path]:
    """Folders written by ``nailseg convert`` (holding ``train.json``), by name, newest first."""
    roots = data_roots() if roots is None else roots
    found = [p.parent for root in roots if root.is_dir() for p in root.glob("*/train.json")]
    return {p.name: p for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)}


def parse_overrides(text: str) -> tuple[str, ...]:
    """``KEY=VALUE`` overrides checked against :data:`OVERRIDES`, as canonical ``KEY=VALUE`` strings.

    Raises:
        gr.Error: a key that is not allowed, or a value that is not a number in its range.
    """
    try:
        items = shlex.split(text or "")
    except ValueError as err:
        raise gr.Error(f"Config overrides: {err}.") from None
    options = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in OVERRIDES:
            allowed = ", ".join(OVERRIDES)
            raise gr.Error(f"Config overrides must be KEY=VALUE with KEY one of: {allowed} (got {item[:60]!r}).")
        kind, low, high = OVERRIDES[key]
        parsed = number(value, key, low, high)
        if kind is int and not parsed.is_integer():
            raise gr.Error(f"{key} must be a whole number.")
        options.append(f"{key}={kind(parsed)!r}")
    return tuple(options)


def device_note() -> str:
    """One line on the hardware training will use, read from torch."""
    import torch

    count = gpu_count()
    if count == 1:
        return f"GPU: **{torch.cuda.get_device_name(0)}**; training runs on it."
    if count > 1:
        names = ", ".join(f"{i}: {torch.cuda.get_device_name(i)}" for i in range(count))
        return (
            f"{count} GPUs: **{names}**. Training runs on as many as the GPUs field says, one process each; "
            "the batch size is per GPU."
        )
    return "No GPU here: training runs on the CPU. It works, but slowly: start with a few hundred iterations."


def gpus_field():
    """The GPUs field, shown only where torch sees more than one GPU, up to their number (default: all)."""
    count = gpu_count()
    return gr.update(visible=count > 1, maximum=max(1, count), value=max(1, count))


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
    lines = [f"**{status.state}** · run {code(Path(status.work_dir).name)}"]
    if status.state == "failed":
        lines.append(f"The training exited with code {status.returncode}; see the log below.")
    if status.metrics:
        ap = ", ".join(f"{k.removeprefix('coco/')} {v:.3f}" for k, v in status.metrics.items())
        lines.append(f"Validation AP: {ap}")
    if status.checkpoint:
        lines.append(f"Newest checkpoint: {code(Path(status.checkpoint).name)}")
    return "\n\n".join(lines)


def loss_frame(status: JobStatus) -> pd.DataFrame:
    """``iter``/``loss`` columns for the loss curve (empty before the first logged iteration)."""
    # Typed even when empty: the plot picks its axis types from the first value it gets.
    iters, losses = zip(*status.losses, strict=True) if status.losses else ((), ())
    return pd.DataFrame({"iter": pd.Series(iters, dtype="int64"), "loss": pd.Series(losses, dtype="float64")})


def export_checkpoint(status: JobStatus) -> tuple[Path, Path]:
    """Export the run's newest checkpoint to ``<work dir>/export/<config>.safetensors`` and zip it.

    Reuses an export newer than the checkpoint. Returns ``(weights, zip)``; the zip holds the
    weights and their ``.json`` config.
    """
    from nailseg.weights import WeightsError, export_weights

    if not status.checkpoint or status.running:
        raise gr.Error("No finished training with a checkpoint to export.")
    work_dir, ckpt = Path(status.work_dir), Path(status.checkpoint)
    configs = sorted(work_dir.glob("*.py"))  # mmengine dumps the run's config as <config name>.py
    name = configs[0].stem if configs else "nailseg"
    weights = work_dir / EXPORT_DIR / f"{name}.safetensors"
    archive = work_dir / f"{name}.zip"
    if not archive.is_file() or archive.stat().st_mtime < ckpt.stat().st_mtime:
        shutil.rmtree(weights.parent, ignore_errors=True)  # only this export in the zip
        weights.parent.mkdir()
        try:
            export_weights(ckpt, weights)
        except WeightsError as err:
            raise gr.Error(str(err)) from None
        choose_threshold(status, weights)
        write_zip(weights.parent, archive)
    return weights, archive


def choose_threshold(status: JobStatus, weights: Path) -> float | None:
    """Record the exported model's default score threshold: best F1 on the run's validation photos
    (the first :data:`THRESHOLD_PHOTOS`). Without usable ones it records none (users get 0.5)."""
    from nailseg.evaluate import record_chosen_score_thr, threshold_ground_truth
    from nailseg.images import ImageError
    from nailseg.weights import WeightsError

    argv = status.argv
    valid = Path(argv[argv.index("--data") + 1]) / "valid.json" if "--data" in argv[:-1] else None
    if valid is None or not valid.is_file():
        return None
    gr.Info(f"Choosing the model's default score threshold on up to {THRESHOLD_PHOTOS} validation photos…")
    try:
        gt, img_dir = threshold_ground_truth(valid, limit=THRESHOLD_PHOTOS)
        return record_chosen_score_thr(weights, gt, img_dir).chosen
    except (ValueError, OSError, ImageError, WeightsError):  # no photos, or a photo gone since training
        return None


def _view(status: JobStatus, allowed: bool = True):
    ended = status.state in ("finished", "stopped") and bool(status.checkpoint)
    if not allowed:
        status = JobStatus()
    return (
        progress_html(status) if allowed else f"<p>{access.how_to_be_owner()}</p>",
        summary_markdown(status),
        loss_frame(status),
        "\n".join(status.log_tail[-LOG_LINES:]),
        gr.update(interactive=allowed and not status.running),
        gr.update(interactive=allowed and status.running),
        gr.update(visible=allowed and ended),
    )


class TrainHandlers:
    """The tab's events, over the app's training run and the model in use they are given."""

    def __init__(self, store: ModelStore, jobs: TrainingJobs) -> None:
        self.store = store
        self.jobs = jobs

    def start_choices(self) -> dict[str, Path | None]:
        """Weights a training may start from, by label: the config's own, the bundled model, earlier runs."""
        choices: dict[str, Path | None] = {FROM_CONFIG: None, FROM_BUNDLED: BUNDLED_WEIGHTS}
        for run in self.jobs.runs():
            for weights in sorted((run / EXPORT_DIR).glob("*.safetensors")):
                choices[f"run {run.name}"] = weights
        return choices

    def poll(self, request: gr.Request, profile: gr.OAuthProfile | None):
        """Timer tick: the job's state, read from its files (cheap); only the owner sees it."""
        return _view(self.jobs.status(), access.is_owner(request, profile))

    def start(
        self,
        config_label: str,
        data: str,
        start_from: str,
        epochs,
        batch_size,
        lr,
        overrides: str,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        gpus=None,
    ):
        """Start a training with the form's values; empty or 0 fields keep the config's own.

        ``gpus`` above 1 runs ``nailseg train --nproc`` (one process per GPU, through torchrun).
        """
        access.require_owner(request, profile, "Training")
        folders = data_choices()
        if data not in folders:
            raise gr.Error("Pick a converted dataset from the list (Dataset tab with 'keep', or `nailseg convert`).")
        if config_label not in CONFIGS:
            raise gr.Error("Pick a model from the list.")
        starts = self.start_choices()
        if (start_from or FROM_CONFIG) not in starts:
            raise gr.Error("Pick the weights to start from in the list.")
        weights = starts[start_from or FROM_CONFIG]
        epochs = int(number(epochs or 0, "Epochs", 0, 10_000))
        batch_size = int(number(batch_size or 0, "Batch size", 0, 256))
        lr = number(lr or 0, "Learning rate", 0, 1)
        gpus = int(number(gpus or 1, "GPUs", 1, max(1, gpu_count())))
        config = CONFIGS[config_label]
        request_ = TrainRequest(
            data=str(folders[data]),
            work_dir=str(self.jobs.new_work_dir(config)),
            config=str(config),
            epochs=epochs or None,
            batch_size=batch_size or None,
            lr=lr or None,
            cfg_options=parse_overrides(overrides),
            load_from=str(weights) if weights else None,
            nproc=gpus if gpus > 1 else None,
        )
        try:
            return _view(self.jobs.start(request_))
        except JobError as err:
            raise gr.Error(str(err)) from None

    def stop(self, request: gr.Request, profile: gr.OAuthProfile | None):
        """Stop the running training (SIGTERM, then SIGKILL); its checkpoints stay."""
        access.require_owner(request, profile, "Stopping the training")
        return _view(self.jobs.stop())

    def download(self, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        """The exported weights and config, zipped (a copy in the app's scratch space, for Gradio)."""
        access.require_owner(request, profile, "Exporting the weights")
        archive = export_checkpoint(self.jobs.status())[1]
        copy = scratch_dir() / access.owner_file_name(archive.name)  # Gradio serves it to the owner only
        shutil.copyfile(archive, copy)
        return str(copy)

    def use_model(self, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        """Load the run's exported weights into the Segment tab, without a restart."""
        from nailseg.weights import WeightsError

        access.require_owner(request, profile, "Loading other weights")
        weights, _ = export_checkpoint(self.jobs.status())
        try:
            return self.store.switch(str(weights))
        except WeightsError as err:
            raise gr.Error(str(err)) from None

    def push(
        self, repo_id: str, token: str, private: bool, request: gr.Request, profile: gr.OAuthProfile | None
    ) -> str:
        """Upload the run's exported weights, config and a model card to a Hub model repo.

        The token is the one typed, else ``$HF_TOKEN`` (e.g. a Space secret); it never appears in a message.
        """
        from nailseg.hub import HubRefused
        from nailseg.publish import push_model
        from nailseg.weights import WeightsError

        access.require_owner(request, profile, "Pushing to the Hub")
        repo_id = (repo_id or "").strip()
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise gr.Error("The repo id must be OWNER/NAME.")
        status = self.jobs.status()
        weights, _ = export_checkpoint(status)
        try:
            result = push_model(
                repo_id, weights, token=(token or "").strip() or None, private=bool(private), metrics=status.metrics
            )
        except (HubRefused, WeightsError) as err:  # HubUnreachable included
            raise gr.Error(str(err)) from None
        return f"Pushed: {result.commit_url}. Load it anywhere with {code('NAILSEG_WEIGHTS=' + result.spec)}."

    def refresh_choices(
        self, data: str | None, start_from: str | None, request: gr.Request, profile: gr.OAuthProfile | None
    ):
        """The dataset and start lists again (a dataset converted, a run finished since the page was built)."""
        if not access.is_owner(request, profile):
            return gr.update(choices=[], value=None), gr.update(choices=[FROM_CONFIG], value=FROM_CONFIG)
        datasets, starts = list(data_choices()), list(self.start_choices())
        return (
            gr.update(choices=datasets, value=data if data in datasets else (datasets[0] if datasets else None)),
            gr.update(choices=starts, value=start_from if start_from in starts else FROM_CONFIG),
        )


@dataclass
class TrainUI:
    """The tab's components that its events read or write."""

    device: gr.Markdown
    config: gr.Radio
    data: gr.Dropdown
    refresh: gr.Button
    start_from: gr.Dropdown
    epochs: gr.Number
    batch_size: gr.Number
    lr: gr.Number
    gpus: gr.Number
    overrides: gr.Textbox
    start_btn: gr.Button
    stop_btn: gr.Button
    progress: gr.HTML
    summary: gr.Markdown
    curve: gr.LinePlot
    log: gr.Textbox
    finished: gr.Group
    download_btn: gr.Button
    use_btn: gr.Button
    weights_file: gr.File
    use_msg: gr.Markdown
    repo_id: gr.Textbox
    token: gr.Textbox
    private: gr.Checkbox
    push_btn: gr.Button
    push_msg: gr.Markdown

    @property
    def view(self) -> list:
        """What :func:`_view` fills, in its order."""
        return [self.progress, self.summary, self.curve, self.log, self.start_btn, self.stop_btn, self.finished]


def train_form() -> tuple:
    """The form: model, data, start, numbers, overrides (``refresh`` reloads the lists)."""
    with gr.Row():
        config = gr.Radio(list(CONFIGS), value=next(iter(CONFIGS)), label="Model", scale=2)
        # The lists fill on page load; start() checks the choice against them itself.
        data = gr.Dropdown(
            [], label="Data: a dataset converted on this server", elem_id="train-data", scale=3, allow_custom_value=True
        )
        refresh = gr.Button("↻ lists", scale=0, min_width=100, size="sm", elem_id="train-data-refresh")
    start_from = gr.Dropdown(
        [FROM_CONFIG], value=FROM_CONFIG, label="Start from", elem_id="train-start-from", allow_custom_value=True
    )
    with gr.Row():
        epochs = gr.Number(0, precision=0, minimum=0, label="Epochs (0: the config's schedule)")
        batch_size = gr.Number(4, precision=0, minimum=1, label="Batch size")
        lr = gr.Number(0, minimum=0, label="Learning rate (0: the config's)")
        # Shown on page load where torch sees several GPUs (gpus_field).
        gpus = gr.Number(1, precision=0, minimum=1, label="GPUs", visible=False, elem_id="train-gpus")
    overrides = gr.Textbox(
        label=f"Config overrides (optional; {', '.join(OVERRIDES)})", placeholder="train_cfg.max_iters=100 ..."
    )
    return config, data, refresh, start_from, epochs, batch_size, lr, gpus, overrides


def train_layout() -> TrainUI:
    """The tab's components, inside the current ``gr.Tab``."""
    device = gr.Markdown(elem_id="train-device")
    if access.is_public():
        gr.Markdown(f"Training changes this server for everyone: it is for the owner. {access.how_to_be_owner()}")
    form = train_form()
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
            token = gr.Textbox(label="Hub write token (empty: $HF_TOKEN, e.g. a Space secret)", type="password")
            private = gr.Checkbox(label="private repo")
        push_btn = gr.Button("Push to the Hugging Face Hub")
        push_msg = gr.Markdown()
    return TrainUI(
        device, *form, start_btn, stop_btn, progress, summary, curve, log, finished,
        download_btn, use_btn, weights_file, use_msg, repo_id, token, private, push_btn, push_msg,
    )  # fmt: skip


def train_tab(demo: gr.Blocks, store: ModelStore, jobs: TrainingJobs) -> Dependency:
    """Build the Train tab inside the caller's ``gr.Tab`` of ``demo`` (its lists fill on page load),
    over the app's training run and model store.

    Returns the event that loads the run's weights for everyone, for the Segment tab to follow.
    """
    on = TrainHandlers(store, jobs)
    ui = train_layout()
    lists = [ui.data, ui.start_from]
    ui.refresh.click(on.refresh_choices, lists, lists, api_name="train_lists")
    demo.load(on.refresh_choices, lists, lists, api_visibility="private")
    demo.load(device_note, None, ui.device, api_visibility="private")  # at page load: torch is not imported at start
    demo.load(gpus_field, None, ui.gpus, api_visibility="private")
    form = [ui.config, ui.data, ui.start_from, ui.epochs, ui.batch_size, ui.lr, ui.overrides, ui.gpus]
    ui.start_btn.click(on.start, form, ui.view, api_name="train_start", concurrency_limit=1)
    ui.stop_btn.click(on.stop, None, ui.view, api_name="train_stop", concurrency_limit=1)
    # Reads a few small files: no queue slot needed, and no spinner every two seconds.
    gr.Timer(2.0).tick(on.poll, None, ui.view, api_name="train_status", concurrency_limit=None, show_progress="hidden")
    ui.download_btn.click(on.download, None, ui.weights_file, api_name="train_export", concurrency_limit=1)
    used = ui.use_btn.click(on.use_model, None, ui.use_msg, api_name="train_use_model", concurrency_limit=1)
    push_inputs = [ui.repo_id, ui.token, ui.private]
    ui.push_btn.click(on.push, push_inputs, ui.push_msg, api_name="train_push", concurrency_limit=1)
    return used
