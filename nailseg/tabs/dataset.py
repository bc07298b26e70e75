"""Dataset → COCO tab: a zipped dataset in, statistics, a preview and train/valid COCO files out.

The zip is a stranger's: :mod:`nailseg.archives` checks and extracts it, and the conversion
checks every photo's size from its header. The extracted photos are deleted before the answer is
returned, unless the owner keeps the dataset on the server for the Train tab: then it goes to
:func:`nailseg.paths.converted_root`, within a quota, and is removed after
:func:`nailseg.paths.keep_hours`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np

from nailseg import access, draw
from nailseg.archives import UnsafeArchive, extract_archive
from nailseg.datasets import convert_dataset, save_report
from nailseg.evaluate import coco_nails
from nailseg.files import folder_bytes, remove_older_than, safe_stem, write_zip
from nailseg.images import ImageError, fit_within, load_image_rgb
from nailseg.paths import converted_root, keep_hours
from nailseg.serving import Upload, code, file_input, number, plain, scratch_dir

PREVIEW_PHOTOS = 4
PREVIEW_SIDE = 1024


def keep_quota_bytes() -> int:
    """Bytes all kept datasets may take together (``$NAILSEG_KEEP_QUOTA_GB``, default 10)."""
    return int(float(os.environ.get("NAILSEG_KEEP_QUOTA_GB", "10")) * 1024**3)


def preview(root: Path, coco: dict, count: int = PREVIEW_PHOTOS) -> list[tuple[np.ndarray, str]]:
    """Up to ``count`` photos of ``coco`` with their nails drawn, as ``(H, W, 3) uint8 RGB``."""
    shown = []
    for image in coco["images"][:count]:
        try:
            rgb = load_image_rgb(root / image["file_name"])
        except ImageError:
            continue
        nails = coco_nails(coco, image)
        shown.append(
            (fit_within(draw.overlay(rgb, nails), PREVIEW_SIDE)[0], f"{image['file_name']}: {len(nails)} nail(s)")
        )
    return shown


def summary_markdown(summary: dict) -> str:
    """Statistics of a conversion, for people (file names as code, so no name can format the page)."""
    lines = [
        f"**{summary['photos']} photos, {summary['nails']} nails** ({summary['nails_per_photo']} per photo), "
        f"layout: {summary['layout']}",
        f"- train: {summary['train']['photos']} photos, {summary['train']['nails']} nails",
        f"- valid: {summary['valid']['photos']} photos, {summary['valid']['nails']} nails",
        "- groups: " + (", ".join(f"{code(k)} ({v})" for k, v in summary["groups"].items()) or "none"),
    ]
    problems = summary["problems"]
    lines.append(f"\n**Problems: {len(problems)}**" if problems else "\nNo problems found.")
    lines += [f"- {code(p['file'])}: {plain(p['problem'])}" for p in problems[:50]]
    if len(problems) > 50:
        lines.append(f"- … and {len(problems) - 50} more (see manifest and the COCO files)")
    return "\n".join(lines)


def kept_dataset_dir(zip_name: str, zip_bytes: int) -> Path:
    """A new folder for a dataset kept for the Train tab; old ones go first, and the quota holds.

    Raises:
        gr.Error: the kept datasets would take more than the quota.
    """
    root = converted_root()
    remove_older_than(root, keep_hours())
    quota = keep_quota_bytes()
    if folder_bytes(root) + zip_bytes > quota:
        raise gr.Error(
            f"Not kept: kept datasets would take more than {quota / 1024**3:.0f} GB; older ones "
            f"are removed after {keep_hours():g} h."
        )
    folder = root / f"{safe_stem(zip_name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True)
    return folder


def convert_zip(
    upload: Upload | None,
    valid_fraction,
    keep: bool,
    request: gr.Request,
    profile: gr.OAuthProfile | None,
    progress=gr.Progress(track_tqdm=True),
):
    """The ``convert_dataset`` API: a zipped dataset in; statistics, a preview and a zip of COCO files out.

    With ``keep`` (the owner's), the photos and COCO files stay on the server for the Train tab;
    otherwise nothing of the upload is left of ours once the answer is returned.
    """
    if not upload:
        raise gr.Error("Upload a .zip of a dataset first.")
    valid_fraction = number(valid_fraction, "Validation share", 0, 0.5)
    if keep:
        access.require_owner(request, profile, "Keeping a dataset on the server")
    zip_path, zip_name = upload.path, upload.name
    kept = kept_dataset_dir(zip_name, Path(zip_path).stat().st_size) if keep else None
    try:
        with tempfile.TemporaryDirectory(prefix="nailseg-dataset-") as scratch:
            folder = kept or Path(scratch)
            progress(0, desc="checking and extracting the zip")
            root, problems = extract_archive(zip_path, folder)
            report = convert_dataset(root, valid_fraction=valid_fraction, progress=True)
            report.problems = problems + report.problems
            out = scratch_dir()
            save_report(report, out / "coco")
            if kept:
                save_report(report, kept)  # the Train tab finds it by its train.json
            shown = preview(root, report.train if report.train["images"] else report.valid)
    except UnsafeArchive as err:
        raise gr.Error(f"Zip refused: {err}.") from None
    except ValueError as err:  # no dataset layout found
        raise gr.Error(str(err).replace(str(folder), "the zip")) from None
    finally:
        if kept and not (kept / "train.json").is_file():
            shutil.rmtree(kept, ignore_errors=True)  # nothing usable was kept: leave nothing
    summary = report.summary()
    summary["root"] = zip_name
    text = summary_markdown(summary)
    if kept:
        text += f"\n\nKept on the server for the Train tab as {code(kept.name)} (removed after {keep_hours():g} h)."
    return text, shown, str(write_zip(out / "coco", out / "coco.zip")), summary


def dataset_tab() -> None:
    """Build the tab's components and events inside the current ``gr.Tab``."""
    gr.Markdown(
        "Upload a `.zip` holding `Images/` + `Masks/` (semantic masks) or `images/` + `labels/` "
        "(YOLO-seg polygons). It is deleted once converted, unless the owner keeps it to train on."
    )
    with gr.Row():
        with gr.Column():
            archive = file_input(label="Dataset (.zip)", file_types=[".zip"], elem_id="dataset-zip")
            valid_fraction = gr.Slider(0.0, 0.5, value=0.2, step=0.05, label="Validation share")
            keep = gr.Checkbox(False, label="Keep the photos on the server to train on them (Train tab; owner only)")
            button = gr.Button("Convert", variant="primary")
        with gr.Column():
            stats = gr.Markdown(elem_id="dataset-stats")
            download = gr.File(label="train.json, valid.json, manifest.csv", elem_id="coco-zip")
    gallery = gr.Gallery(label="Preview (annotations drawn)", columns=4, height=300)
    summary = gr.JSON(label="Summary", visible=False)
    button.click(
        convert_zip,
        [archive, valid_fraction, keep],
        [stats, gallery, download, summary],
        api_name="convert_dataset",
        concurrency_limit=1,
    )
