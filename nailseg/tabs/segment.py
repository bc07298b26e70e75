"""Segment tab: one photo (or several) in; overlay, per-nail table, crops and a zip out.

The model runs once per photo (``segment``), and the visitor's session keeps every detection it
made. Moving the score threshold or changing the crop options redraws from them (``render``)
without a model run, through :func:`nailseg.dedup.shown_nails` (the threshold, then duplicate
suppression), so the page shows at every threshold what ``predict`` shows at it. The app works on
photos shrunk to ``WORK_SIDE`` (what the model sees anyway); ``nailseg predict`` keeps the full
resolution. What a visitor's session keeps is bounded (:class:`nailseg.serving.SessionStore`).
The handlers (:class:`SegmentHandlers`) work on the model store and sessions the app hands them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np
from gradio.image_utils import decode_base64_to_file
from PIL import Image

from nailseg import access, draw, outputs
from nailseg.convert import resize_mask
from nailseg.dedup import MaskDedup, shown_nails
from nailseg.files import output_stem, safe_stem, unique_names, write_zip
from nailseg.images import ImageError, exif_size, load_image_rgb
from nailseg.inference import MAX_INFERENCE_SIDE
from nailseg.result import Nails
from nailseg.serving import (
    ModelStore,
    SessionStore,
    Upload,
    code,
    number,
    scratch_dir,
    upload_folder,
    uploaded_file,
    weights_name,
)
from nailseg.weights import WeightsError

if TYPE_CHECKING:
    from gradio.events import Dependency

TABLE_HEADER = "| nail | score | box (x0, y0, x1, y1) | area (px) |\n|---:|---:|---|---:|"
WORK_SIDE = MAX_INFERENCE_SIDE  # the model sees at most this; so do the overlay, crops and zip here
BACKGROUNDS = ["keep", "black"]  # in box crops; the cut-outs are transparent outside the nail
CROPS = draw.CropOptions(margin=0.1, square=True, size=224)  # the tab's defaults: classifier-ready
MAX_CROP_SIZE = 2048
MAX_BATCH = 50
NOT_KEPT = ". **Not kept for redraws** (the server is busy): a new threshold or crop needs **Segment** again"


@dataclass(frozen=True)
class SegmentedPhoto:
    """A visitor's segmented photo, kept for redraws: the working-size photo and the model's detections.

    Attributes:
        name: the photo's file name as the visitor gave it.
        stem: a safe stem for the files written for it.
        image_rgb: ``(h, w, 3) uint8`` RGB, EXIF rotation applied, shrunk to ``WORK_SIDE``.
        original_size: ``(width, height)`` of the photo as uploaded.
        boxes_xyxy, scores, rles: every detection of the model (``NailSegmenter.detect``), in its
            order and at the size it saw the photo, masks as COCO RLE (:func:`packed_rles`).
        model_size: ``(height, width)`` of the photo the model saw.
        dedup: the model's duplicate suppression; to_photo: the model's detections to the photo's ``Nails``.
        seconds: model time; weights, notice: where the weights came from, and what to say about them.
    """

    name: str
    stem: str
    image_rgb: np.ndarray
    original_size: tuple[int, int]
    boxes_xyxy: np.ndarray
    scores: np.ndarray
    rles: list[dict]
    model_size: tuple[int, int]
    dedup: MaskDedup | None
    to_photo: Callable[[Nails], Nails]
    seconds: float
    weights: str
    notice: str = ""

    @property
    def nbytes(self) -> int:
        return self.image_rgb.nbytes + sum(len(r["counts"]) for r in self.rles) + 64 * len(self.rles)

    def nails(self, score_thr: float) -> Nails:
        """What ``predict`` shows at ``score_thr``: :func:`~nailseg.dedup.shown_nails` of the kept
        detections, in pixels of :attr:`image_rgb` and in reading order.

        Only the detections scoring at least ``score_thr`` are decoded (``shown_nails`` drops the
        others first anyway): 50 masks of a 1600 px photo would take 128 MB.
        """
        from pycocotools import mask as mask_utils

        keep = np.flatnonzero(self.scores >= score_thr)
        masks = np.zeros((0, *self.model_size), bool)
        if len(keep):
            masks = mask_utils.decode([self.rles[i] for i in keep]).astype(bool).transpose(2, 0, 1)
        detections = Nails(self.boxes_xyxy[keep], masks, self.scores[keep])
        return self.to_photo(shown_nails(detections, score_thr, self.dedup))


def packed_rles(nails: Nails) -> list[dict]:
    """``nails``' masks as COCO RLE with ``bytes`` counts, as ``pycocotools.mask.decode`` takes them."""
    return [
        {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()}
        for r in nails.to_coco_results(1)
    ]


def uploaded_photo(payload) -> Upload | None:
    """The photo of a ``gr.Image`` payload, undecoded, if Gradio received it for this server.

    ``gr.Image`` itself would open any path a payload gives, and decode the file before the handler
    could say what is wrong with it: the Segment event runs with ``preprocess=False`` and this
    takes the raw payload (see :func:`~nailseg.serving.uploaded_file`); :func:`read_photo` decodes.
    """
    if not payload:
        return None
    url = payload.get("url") if isinstance(payload, dict) else None
    if isinstance(url, str) and url.startswith("data:"):  # webcam and clipboard
        return picture_from_data_url(url)
    return uploaded_file(payload)


def picture_from_data_url(url: str) -> Upload:
    """A webcam or clipboard picture, written into Gradio's folder as ``gr.Image`` would write it."""
    try:
        path = decode_base64_to_file(url, str(upload_folder()), "png")
    except (ValueError, OSError, Image.DecompressionBombError):  # not base64, not an image, too large
        raise gr.Error("Cannot use `photo.png`: not a readable image.") from None
    return Upload.received(path, "photo.png")


def crop_options(margin, square, size, background, align=False) -> draw.CropOptions:
    """The UI's crop fields as :class:`~nailseg.draw.CropOptions` (size 0 or empty: keep pixels)."""
    if background not in BACKGROUNDS:
        raise gr.Error(f"Background must be one of {', '.join(BACKGROUNDS)}.")
    size = int(number(size or 0, "Output size", 0, MAX_CROP_SIZE))
    margin = number(margin, "Margin", 0, 1)
    return draw.CropOptions(margin, bool(square), size or None, background == "black", bool(align))


def read_photo(upload: Upload) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an upload at working size; returns ``(image_rgb, (width, height) as uploaded)``.

    Raises:
        gr.Error: the file is not a usable photo; the message names it as the visitor did.
    """
    try:
        return load_image_rgb(upload.path, max_side=WORK_SIDE), exif_size(upload.path)
    except ImageError as err:
        raise gr.Error(f"Cannot use {code(upload.name)}: {err}.") from None


def render(photo: SegmentedPhoto | None, score_thr: float, options: draw.CropOptions):
    """Everything the tab shows for a segmented photo at a score threshold and crop options.

    Returns:
        ``(overlay PNG, Markdown table, per-nail records, gallery, zip path, status)``; overlay, records
        and files are in pixels of the working-size photo.
    """
    if photo is None:
        return None, "", [], [], None, "Add a photo and press **Segment**."
    nails = photo.nails(score_thr)
    out = scratch_dir()
    images = outputs.render_nails(photo.image_rgb, nails, options)
    saved = outputs.save_photo(
        out / "nails", photo.stem, photo.image_rgb, nails, options, masks=True, images=images, photo=photo.name
    )
    outputs.write_predictions(out / "nails", outputs.photo_results(nails, 1, photo.name))
    outputs.write_crops_csv(out / "nails", saved.crop_rows)
    zip_path = write_zip(out / "nails", out / f"{photo.stem}_nails.zip")
    records = nails.to_records()
    table = "\n".join([TABLE_HEADER] + [nail_row(r) for r in records]) if records else ""
    gallery = [(str(p), f"nail {k}") for k, p in enumerate(saved.crops, start=1)]
    height, width = photo.image_rgb.shape[:2]
    found = f"**{len(nails)} nail(s)** found" if len(nails) else f"**No nails found** at score ≥ {score_thr:.2f}"
    size = f"{width}×{height} px"
    if (width, height) != photo.original_size:
        size += " (shrunk from {}×{}; `nailseg predict` keeps the full size)".format(*photo.original_size)
    status = f"{found} in {code(photo.name)}, {size}; model time {photo.seconds:.2f} s; weights: {code(photo.weights)}"
    if photo.notice:
        status += f". **{photo.notice}**"
    return str(saved.overlay), table, records, gallery, str(zip_path), status


def nail_row(record: dict) -> str:
    """One nail as a row of the Markdown table (numbers only: nothing a visitor sent)."""
    box = ", ".join(f"{v:.0f}" for v in record["box_xyxy"])
    return f"| {record['number']} | {record['score']:.3f} | {box} | {record['area']} |"


def uploaded_size_labels(file_name: str, nails: Nails, original_size: tuple[int, int]) -> outputs.PhotoLabels:
    """A photo's pre-labels at the size it was uploaded (``(width, height)``): the working-size
    masks scaled back one at a time, as ``nailseg predict`` scales the model's back to a photo."""
    width, height = original_size
    masks = (resize_mask(mask, height, width) for mask in nails.masks)
    return outputs.photo_labels(file_name, width, height, masks, nails.scores)


class SegmentHandlers:
    """The tab's events, over the model in use and the visitors' kept photos they are given."""

    def __init__(self, store: ModelStore, sessions: SessionStore) -> None:
        self.store = store
        self.sessions = sessions

    def detect(self, name: str, stem: str, image_rgb: np.ndarray, original_size: tuple[int, int]) -> SegmentedPhoto:
        """Run the model in use once on a working-size photo, keeping every detection it makes."""
        try:
            model = self.store.current
        except WeightsError as err:
            raise gr.Error(str(err)) from None
        start = time.perf_counter()
        detections, to_photo = model.detect(image_rgb)
        seconds = time.perf_counter() - start
        return SegmentedPhoto(
            name,
            stem,
            image_rgb,
            original_size,
            detections.boxes_xyxy,
            detections.scores,
            packed_rles(detections),
            detections.image_size,
            model.dedup,
            to_photo,
            seconds,
            weights_name(model.weights.source),
            self.store.notice,
        )

    def segment(
        self,
        payload: dict | None,
        score_thr,
        options: draw.CropOptions,
        key: str | None,
        request: gr.Request,
        progress=gr.Progress(),
    ):
        """The ``segment`` API: one photo and a score threshold in; see :func:`render` for what comes out.

        Its inputs arrive as sent (the event runs with ``preprocess=False``: :func:`uploaded_photo`).
        """
        upload = uploaded_photo(payload)
        if not upload:
            raise gr.Error("Add a photo first (drop, paste, pick or take one).")
        score_thr = number(score_thr, "Score threshold", 0, 1)
        if not self.store.ready:
            progress(0, desc="Loading the model (only the first photo after a start waits for it)…")
        image_rgb, original_size = read_photo(upload)
        photo = self.detect(upload.name, safe_stem(upload.name), image_rgb, original_size)
        shown, key = self.render_and_keep(photo, score_thr, options, key, request)
        return (*shown, key)

    def redraw(self, key: str | None, score_thr, margin, square, size, background, align):
        """Redraw the visitor's photo for a new threshold or crop options, from its kept detections."""
        options = crop_options(margin, square, size, background, align)
        score_thr = number(score_thr, "Score threshold", 0, 1)
        photo = self.sessions.get(key)
        if photo is None and key is not None:
            raise gr.Error("This photo is no longer kept on the server: press Segment again.")
        return (*render(photo, score_thr, options), options, key)

    def render_and_keep(
        self, photo: SegmentedPhoto, score_thr: float, options: draw.CropOptions, key: str | None, request: gr.Request
    ):
        """:func:`render`'s outputs, and the photo kept for redraws under ``key`` (None: not kept, and the
        status line says so) within the share of the request's client address."""
        key = self.sessions.put(photo, photo.nbytes, key, access.client_address(request))
        *shown, status = render(photo, score_thr, options)
        return (*shown, status if key else status + NOT_KEPT), key

    def segment_batch(
        self, payload: list | None, score_thr, margin, square, size, background, align
    ) -> tuple[str, str]:
        """Several photos in; one zip out and a summary.

        The zip holds a folder per photo and ``predictions.json``, ``crops.csv`` (pixels of the photos
        at working size), and the pre-labels ``annotations.json`` and ``labels/`` at the size each photo
        was uploaded, named as uploaded (a repeated name numbered: :func:`~nailseg.files.unique_names`).
        Its inputs arrive as sent (the event runs with ``preprocess=False``): each file is checked by
        :func:`~nailseg.serving.uploaded_file`, and one that is refused ends the request.
        """
        if not payload:
            raise gr.Error("Add one or more photos first.")
        payload = payload if isinstance(payload, list) else [payload]
        if len(payload) > MAX_BATCH:
            raise gr.Error(f"At most {MAX_BATCH} photos at once ({len(payload)} given).")
        uploads = [uploaded_file(file) for file in payload]
        options = crop_options(margin, square, size, background, align)
        score_thr = number(score_thr, "Score threshold", 0, 1)
        out = scratch_dir()
        results, rows, lines, labelled = [], [], [], []
        names = [u.name for u in uploads]
        label_names = unique_names(names)
        photos = zip(uploads, names, [output_stem(n) for n in label_names], label_names)
        for image_id, (upload, name, stem, label_name) in enumerate(photos, start=1):
            try:
                image_rgb, original_size = read_photo(upload)
            except gr.Error as err:
                lines.append(f"- skipped: {err.message}")
                continue
            nails = self.detect(name, stem, image_rgb, original_size).nails(score_thr)
            saved = outputs.save_photo(out / "nails" / stem, stem, image_rgb, nails, options, masks=True, photo=name)
            rows += [{**r, "crop": f"{stem}/{r['crop']}", "cutout": f"{stem}/{r['cutout']}"} for r in saved.crop_rows]
            results += outputs.photo_results(nails, image_id, name)
            labelled.append(uploaded_size_labels(label_name, nails, original_size))
            renamed = f" (labelled as {code(label_name)}: an earlier photo has its name)" if label_name != name else ""
            lines.append(f"- {code(name)}: {len(nails) or 'no'} nail(s){renamed}")
        outputs.write_predictions(out / "nails", results)
        outputs.write_crops_csv(out / "nails", rows)
        outputs.write_labels(out / "nails", labelled, yolo=True)
        return str(write_zip(out / "nails", out / "nails_batch.zip")), "\n".join(lines)

    def switch_weights(self, spec: str, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        """Load other weights for every later request (the owner's); the message says which are in use."""
        access.require_owner(request, profile, "Loading other weights")
        try:
            return self.store.switch(spec or "")
        except WeightsError as err:
            raise gr.Error(f"Weights not loaded: {err}") from None

    def model_view(self) -> tuple[float, str]:
        """What the tab shows of the model in use: its default threshold (the slider) and the status line."""
        return self.store.score_thr(), self.store.status()


@dataclass
class SegmentUI:
    """The tab's components that its events read or write."""

    photo: gr.Image
    score: gr.Slider
    button: gr.Button
    margin: gr.Slider
    square: gr.Checkbox
    size: gr.Number
    background: gr.Radio
    align: gr.Checkbox
    status: gr.Markdown
    overlay: gr.Image
    download: gr.File
    gallery: gr.Gallery
    table: gr.Markdown
    records: gr.JSON
    batch_files: gr.File
    batch_button: gr.Button
    batch_zip: gr.File
    batch_summary: gr.Markdown
    weights: gr.Textbox
    weights_button: gr.Button
    weights_status: gr.Markdown

    @property
    def crop_fields(self) -> list:
        return [self.margin, self.square, self.size, self.background, self.align]

    @property
    def shown(self) -> list:
        """What :func:`render` fills, in its order."""
        return [self.overlay, self.table, self.records, self.gallery, self.download, self.status]


def crop_option_fields() -> tuple[gr.Slider, gr.Checkbox, gr.Number, gr.Radio, gr.Checkbox]:
    """The crop options' fields (margin, square, size, background, align) at the tab's defaults."""
    margin = gr.Slider(0.0, 1.0, value=CROPS.margin, step=0.05, label="Margin (fraction of the box's longer side)")
    square = gr.Checkbox(value=CROPS.square, label="Square (pad to a square)")
    size = gr.Number(
        value=CROPS.size, precision=0, minimum=0, maximum=MAX_CROP_SIZE, label="Output size (px, 0 = as cut)"
    )
    background = gr.Radio(BACKGROUNDS, value="keep", label="Background in box crops")
    align = gr.Checkbox(value=CROPS.align, label="Align: long axis vertical, tip up where it can be told")
    return margin, square, size, background, align


def segment_layout(examples: list[str], store: ModelStore) -> SegmentUI:
    """The tab's components, inside the current ``gr.Tab``."""
    with gr.Row():
        with gr.Column():
            photo = gr.Image(
                type="filepath", label="Photo", sources=["upload", "clipboard", "webcam"], height=360, elem_id="photo"
            )
            # The model's own default threshold, read again at every page load (the owner may switch models).
            score = gr.Slider(0.05, 1.0, value=store.score_thr, step=0.01, label="Score threshold", elem_id="score")
            button = gr.Button("Segment", variant="primary")
            with gr.Accordion("Crop options (for a classifier)", open=False):
                fields = crop_option_fields()
            gr.Examples(examples, inputs=photo, elem_id="examples")
        with gr.Column():
            status = gr.Markdown("Add a photo and press **Segment**.", elem_id="segment-status")
            overlay = gr.Image(label="Nails", type="filepath", interactive=False, elem_id="overlay")
            download = gr.File(
                label="Download (crops, cut-outs, masks, overlay, predictions.json, crops.csv)", elem_id="segment-zip"
            )
    gallery = gr.Gallery(label="Crops", columns=8, height=220, fit_columns=False, object_fit="contain", elem_id="crops")
    with gr.Row():
        # A Markdown table, not gr.Dataframe: that one imports pandas' Styler (and matplotlib) at
        # start, which alone would delay the page by seconds.
        table = gr.Markdown(label="Nails", elem_id="nails-table")
        records = gr.JSON(label="Nails (JSON)")
    with gr.Accordion("Several photos at once", open=False):
        batch_files = gr.File(file_count="multiple", file_types=["image"], label=f"Photos (up to {MAX_BATCH})")
        batch_button = gr.Button("Segment all")
        batch_zip = gr.File(
            label="Download (a folder per photo; annotations.json and labels/ to correct in CVAT, Label Studio...)"
        )
        batch_summary = gr.Markdown()
    with gr.Accordion("Weights (owner only)", open=False):
        weights = gr.Textbox(
            label="Weights: a local .safetensors path (its .json config beside it) "
            "or hf://owner/repo[@revision]/file.safetensors",
            elem_id="weights-spec",
        )
        weights_button = gr.Button("Load weights for everyone")
        weights_status = gr.Markdown(store.status(), elem_id="weights-status")
        if access.is_public():
            gr.Markdown(f"This server is public: loading weights is for its owner. {access.how_to_be_owner()}")
    return SegmentUI(
        photo, score, button, *fields, status, overlay, download, gallery, table, records,
        batch_files, batch_button, batch_zip, batch_summary, weights, weights_button, weights_status,
    )  # fmt: skip


def segment_tab(examples: list[str], store: ModelStore, sessions: SessionStore) -> Callable[[Dependency], None]:
    """Build the tab's components and events inside the current ``gr.Tab``, over the app's model
    store and sessions.

    Returns ``follow_model(event)``: after ``event`` (another tab's) has loaded other weights, the
    slider moves to their threshold and the status line names them, as after this tab's own loading.
    """
    on = SegmentHandlers(store, sessions)
    ui = segment_layout(examples, store)
    options_state = gr.State(CROPS)
    session = gr.State(None)  # a key into the SessionStore: what is kept is bounded there, not here
    # A visitor's inputs reach these handlers as sent (preprocess=False): each handler checks them
    # itself, files by serving.uploaded_file, numbers by serving.number.
    ui.button.click(
        on.segment,
        [ui.photo, ui.score, options_state, session],
        [*ui.shown, session],
        api_name="segment",
        concurrency_limit=2,
        preprocess=False,
    )
    redrawn_by = [ui.score.release, ui.margin.release, *(f.change for f in ui.crop_fields[1:])]
    gr.on(
        redrawn_by,
        on.redraw,
        [session, ui.score, *ui.crop_fields],
        [*ui.shown, options_state, session],
        api_name="render",
        preprocess=False,
    )
    ui.batch_button.click(
        on.segment_batch,
        [ui.batch_files, ui.score, *ui.crop_fields],
        [ui.batch_zip, ui.batch_summary],
        api_name="segment_batch",
        concurrency_limit=1,
        preprocess=False,
    )
    ui.status.change(store.status, None, ui.weights_status, api_visibility="private", show_progress="hidden")

    def follow_model(event: Dependency) -> None:
        event.success(
            on.model_view, None, [ui.score, ui.weights_status], api_visibility="private", show_progress="hidden"
        )

    follow_model(
        ui.weights_button.click(
            on.switch_weights, ui.weights, ui.weights_status, api_name="switch_weights", concurrency_limit=1
        )
    )
    return follow_model
