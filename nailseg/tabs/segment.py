"""Segment tab: one photo (or several) in; overlay, per-nail table, crops and a zip out.

The model runs once per photo (``segment`` event); raising the score threshold or changing the
crop options redraws from the session's cached detections (``render`` event) without rerunning it
(lowering the threshold reruns it: only nails above the threshold are kept, as full-size masks
of a 50 MP photo are 50 MB each). Uploads are deleted as soon as they are decoded; the decoded
photo stays in the session.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder

from nailseg import draw
from nailseg.images import ImageError, fit_within, load_image_rgb
from nailseg.outputs import save_nail_files, unique_stems
from nailseg.result import Nails
from nailseg.serving import STORE, describe, scratch_dir
from nailseg.weights import WeightsError

TABLE_HEADERS = ["number", "score", "box_xyxy", "area"]
DISPLAY_SIDE = 2048  # the overlay shown in the page is at most this; the zip holds it at full size
BACKGROUNDS = ["kept", "masked out"]
_EXAMPLE_NAMES: set[str] = set()  # Gradio's cached copies of the examples are reused: keep them


@dataclass(frozen=True)
class Detections:
    """One segmented photo, kept in the session so redraws need no model run.

    Attributes:
        name: file stem of the photo (names the zip and its files).
        image_rgb: ``(H, W, 3) uint8`` RGB photo, EXIF rotation applied.
        nails: the model's detections scoring at least ``floor``.
        floor: the score threshold ``nails`` were kept at.
        seconds: model time, in seconds.
        weights: where the weights came from.
        notice: what the UI must say about those weights (e.g. the Hub was unreachable), or "".
        upload: path of the upload it came from (deleted once decoded).
    """

    name: str
    image_rgb: np.ndarray
    nails: Nails
    floor: float
    seconds: float
    weights: str
    notice: str = ""
    upload: str = ""


def photo_input(**kwargs) -> gr.Image:
    """A ``gr.Image`` whose handler receives the uploaded file's path, undecoded.

    ``gr.Image`` opens the file with PIL before the handler runs, so a file that is not an image
    fails with a bare traceback; here :func:`read_upload` decodes it and says what is wrong.
    (An instance override, not a subclass: Gradio writes a ``.pyi`` beside subclasses' modules.)
    """
    image = gr.Image(type="filepath", **kwargs)
    decode = image.preprocess

    def undecoded(payload):
        if payload is None or payload.path is None or (payload.url or "").startswith("data:"):
            return decode(payload)  # webcam and clipboard data URLs: Gradio writes them to a file
        return str(payload.path)

    image.preprocess = undecoded
    return image


def crop_options(margin: float, square: bool, size: float | None, background: str) -> draw.CropOptions:
    """The UI's crop fields as :class:`~nailseg.draw.CropOptions` (size 0 or empty: keep pixels)."""
    return draw.CropOptions(float(margin), bool(square), int(size) if size else None, background == "masked out")


def read_upload(path: str, previous: Detections | None = None) -> np.ndarray:
    """Decode an upload into ``(H, W, 3) uint8 RGB`` and delete it if it is in Gradio's upload folder.

    Raises:
        gr.Error: the file is not a usable photo (the message says why).
    """
    if previous is not None and previous.upload == path and not Path(path).exists():
        return previous.image_rgb  # same photo again; its upload was already deleted
    try:
        return load_image_rgb(path)
    except FileNotFoundError as err:
        raise gr.Error("The photo is no longer on the server (uploads are deleted after use): add it again.") from err
    except ImageError as err:
        raise gr.Error(f"Cannot use this file: {err}.") from err
    finally:
        forget_upload(path)


def forget_upload(path: str) -> None:
    """Delete an uploaded file: only one inside Gradio's upload folder, never an example photo."""
    file = Path(path).resolve()
    if file.is_relative_to(Path(get_upload_folder()).resolve()) and file.name not in _EXAMPLE_NAMES:
        file.unlink(missing_ok=True)


def detect(name: str, image_rgb: np.ndarray, score_thr: float, upload: str = "") -> Detections:
    """Run the model in use on one ``(H, W, 3) uint8 RGB`` photo, keeping nails scoring ``score_thr`` or more."""
    model = STORE.current
    start = time.perf_counter()
    nails = model.predict(image_rgb, score_thr)
    seconds = time.perf_counter() - start
    return Detections(name, image_rgb, nails, score_thr, seconds, model.weights.source, STORE.notice, upload)


def write_zip(folder: Path, zip_path: Path) -> Path:
    """Zip every file under ``folder`` (paths relative to it) into ``zip_path``."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(folder).as_posix())
    return zip_path


def save_photo_files(out_dir: Path, stem: str, image_rgb: np.ndarray, nails: Nails, options: draw.CropOptions,
                     image_id: int = 1) -> list[dict]:  # fmt: skip
    """Overlay, crops, cut-outs and masks of one photo under ``out_dir``; returns its COCO results."""
    save_nail_files(out_dir, stem, image_rgb, nails, options, masks=True)
    return [{**r, "file_name": stem} for r in nails.to_coco_results(image_id)]


def render(result: Detections | None, score_thr: float, options: draw.CropOptions):
    """Everything the tab shows for a segmented photo at a score threshold and crop options.

    Returns:
        ``(overlay (h, w, 3) uint8 RGB, table rows, per-nail records, gallery, zip path, status)``; the
        overlay is shrunk to ``DISPLAY_SIDE`` for the page, the records are in pixels of the photo.
    """
    if result is None:
        return None, [], [], [], None, "Add a photo and press **Segment**."
    nails = result.nails.filter(score_thr)
    records = nails.to_records()
    out = scratch_dir()
    results = save_photo_files(out / "nails", result.name, result.image_rgb, nails, options)
    (out / "nails" / "predictions.json").write_text(json.dumps(results))
    zip_path = write_zip(out / "nails", out / f"{result.name}_nails.zip")
    crops = draw.crop_boxes(result.image_rgb, nails, options)
    gallery = [(crop, f"nail {k}") for k, crop in enumerate(crops, start=1)]
    rows = [[r["number"], r["score"], ", ".join(f"{v:.0f}" for v in r["box_xyxy"]), r["area"]] for r in records]
    height, width = result.image_rgb.shape[:2]
    found = f"**{len(nails)} nail(s)** found" if len(nails) else f"**No nails found** at score ≥ {score_thr:.2f}"
    status = f"{found} in {width}×{height} px; model time {result.seconds:.2f} s; weights: `{result.weights}`"
    if result.notice:
        status += f". **{result.notice}**"
    shown, _ = fit_within(draw.overlay(result.image_rgb, nails), DISPLAY_SIDE)
    return shown, rows, records, gallery, str(zip_path), status


def segment(photo: str | None, score_thr: float, options: draw.CropOptions, previous: Detections | None):
    """The ``segment`` API: one photo and a score threshold in; see :func:`render` for what comes out."""
    if not photo:
        raise gr.Error("Add a photo first (drop, paste, pick or take one).")
    image_rgb = read_upload(photo, previous)
    result = detect(Path(photo).stem, image_rgb, score_thr, photo)
    return (*render(result, score_thr, options), result)


def redraw(result: Detections | None, score_thr: float, margin: float, square: bool, size: float | None,
           background: str):  # fmt: skip
    """Redraw the session's photo for a new threshold or crop options (model run only below its floor)."""
    options = crop_options(margin, square, size, background)
    if result is not None and score_thr < result.floor:
        result = detect(result.name, result.image_rgb, score_thr, result.upload)
    return (*render(result, score_thr, options), options, result)


def segment_batch(paths: list[str] | None, score_thr: float, margin: float, square: bool, size: float | None,
                  background: str) -> tuple[str, str]:  # fmt: skip
    """Several photos in, one zip out (a folder per photo, one ``predictions.json``), and a summary."""
    if not paths:
        raise gr.Error("Add one or more photos first.")
    options = crop_options(margin, square, size, background)
    out = scratch_dir()
    results, lines = [], []
    for image_id, (path, stem) in enumerate(zip(paths, unique_stems([Path(p) for p in paths])), start=1):
        try:
            image_rgb = load_image_rgb(path)
        except ImageError as err:
            lines.append(f"- `{Path(path).name}`: skipped, {err}")
            continue
        finally:
            forget_upload(path)
        nails = detect(stem, image_rgb, score_thr).nails
        results += save_photo_files(out / "nails" / stem, stem, image_rgb, nails, options, image_id)
        lines.append(f"- `{Path(path).name}`: {len(nails) or 'no'} nail(s)")
    (out / "nails").mkdir(exist_ok=True)
    (out / "nails" / "predictions.json").write_text(json.dumps(results))
    return str(write_zip(out / "nails", out / "nails_batch.zip")), "\n".join(lines)


def switch_weights(spec: str) -> str:
    """Load other weights for every later request; the message says which are in use."""
    try:
        return STORE.switch(spec)
    except WeightsError as err:
        raise gr.Error(f"Weights not loaded: {err}") from err


def segment_tab(examples: list[str]) -> None:
    """Build the tab's components and events inside the current ``gr.Tab``."""
    _EXAMPLE_NAMES.update(Path(p).name for p in examples)
    options_state = gr.State(draw.CropOptions(margin=0.1, square=True, size=224))
    result_state = gr.State(None, time_to_live=3600)
    with gr.Row():
        with gr.Column():
            photo = photo_input(label="Photo", sources=["upload", "clipboard", "webcam"], height=360, elem_id="photo")
            score = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="Score threshold")
            button = gr.Button("Segment", variant="primary")
            with gr.Accordion("Crop options (for a classifier)", open=False):
                margin = gr.Slider(0.0, 1.0, value=0.1, step=0.05, label="Margin (fraction of the box's longer side)")
                square = gr.Checkbox(value=True, label="Square (pad to a square)")
                size = gr.Number(value=224, precision=0, minimum=0, maximum=2048, label="Output size (px, 0 = as cut)")
                background = gr.Radio(BACKGROUNDS, value="kept", label="Background in box crops")
            gr.Examples(examples, inputs=photo, elem_id="examples")
        with gr.Column():
            status = gr.Markdown("Add a photo and press **Segment**.", elem_id="segment-status")
            overlay = gr.Image(label="Nails", type="numpy", interactive=False, elem_id="overlay")
            download = gr.File(label="Download (crops, cut-outs, masks, overlay, predictions.json)",
                               elem_id="segment-zip")  # fmt: skip
    gallery = gr.Gallery(label="Crops", columns=8, height=220, fit_columns=False, object_fit="contain", elem_id="crops")
    with gr.Row():
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Nails", interactive=False)
        records = gr.JSON(label="Nails (JSON)")
    with gr.Accordion("Several photos at once", open=False):
        batch_files = gr.File(file_count="multiple", file_types=["image"], label="Photos")
        batch_button = gr.Button("Segment all")
        batch_zip = gr.File(label="Download (one folder per photo)")
        batch_summary = gr.Markdown()
    with gr.Accordion("Weights", open=False):
        weights = gr.Textbox(label="Weights: a local path or hf://owner/repo[@revision]/file.safetensors")
        weights_button = gr.Button("Load weights")
        weights_status = gr.Markdown(describe(STORE.current, STORE.notice))

    shown = [overlay, table, records, gallery, download, status]
    button.click(segment, [photo, score, options_state, result_state], [*shown, result_state], api_name="segment",
                 concurrency_limit=2)  # fmt: skip
    gr.on([score.release, margin.release, square.change, size.change, background.change], redraw,
          [result_state, score, margin, square, size, background], [*shown, options_state, result_state],
          api_name="render")  # fmt: skip
    batch_button.click(segment_batch, [batch_files, score, margin, square, size, background],
                       [batch_zip, batch_summary], api_name="segment_batch", concurrency_limit=1)  # fmt: skip
    weights_button.click(switch_weights, weights, weights_status, api_name="switch_weights", concurrency_limit=1)
