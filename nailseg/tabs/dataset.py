"""Dataset → COCO tab: a zipped dataset in, statistics, a preview and train/valid COCO files out.

The zip is a stranger's: it is checked, extracted and converted in a child process with limits
(:mod:`nailseg.dataset_zip`), so a crash or a runaway allocation there is a message to that
visitor, not the end of the server. The extracted photos are deleted before the answer is
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

from nailseg import access
from nailseg.dataset_zip import convert_in_child
from nailseg.files import folder_bytes, remove_older_than, safe_stem, write_zip
from nailseg.paths import converted_root, keep_hours
from nailseg.sandbox import ChildFailed, ChildRefused
from nailseg.serving import code, number, plain, scratch_dir, uploaded_file


def keep_quota_bytes() -> int:
    """Bytes all kept datasets may take together (``$NAILSEG_KEEP_QUOTA_GB``, default 10)."""
    return int(float(os.environ.get("NAILSEG_KEEP_QUOTA_GB", "10")) * 1024**3)


def summary_markdown(summary: dict) -> str:
    """Statistics of a conversion, for people (file names as code, so no name can format the page)."""
    lines = [
        f"**{summary['photos']} photos, {summary['nails']} nails** ({summary['nails_per_photo']} per photo), "
        f"layout: {summary['layout']}",
        f"- train: {summary['train']['photos']} photos, {summary['train']['nails']} nails",
        f"- valid: {summary['valid']['photos']} photos, {summary['valid']['nails']} nails",
        f"- groups: {_counts(summary['groups'])}",
    ]
    if crowds := summary.get("crowd_regions"):
        lines.append(f"- crowd regions (`iscrowd`: several nails in one, not learnt as a nail): {crowds}")
    if categories := summary.get("categories"):  # a COCO dataset's
        kept, left_out = (_counts(categories[side]) for side in ("kept", "left_out"))
        lines.append(f"- categories kept as nails: {kept}; left out: {left_out}")
    problems = summary["problems"]
    lines.append(f"\n**Problems: {len(problems)}**" if problems else "\nNo problems found.")
    lines += [f"- {code(p['file'])}: {plain(p['problem'])}" for p in problems[:50]]
    if len(problems) > 50:
        lines.append(f"- … and {len(problems) - 50} more (see manifest and the COCO files)")
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    """``name (count), ...`` with each name as code, or ``none``."""
    return ", ".join(f"{code(name)} ({count})" for name, count in counts.items()) or "none"


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
    payload: dict | None,
    valid_fraction,
    keep: bool,
    request: gr.Request,
    profile: gr.OAuthProfile | None,
    progress=gr.Progress(),
):
    """The ``convert_dataset`` API: a zipped dataset in; statistics, a preview and a zip of COCO files out.

    Its inputs arrive as sent (the event runs with ``preprocess=False``, see
    :func:`~nailseg.serving.uploaded_file`). With ``keep`` (the owner's), the photos and COCO files
    stay on the server for the Train tab; otherwise nothing of the upload is left of ours once the
    answer is returned.
    """
    if not payload:
        raise gr.Error("Upload a .zip of a dataset first.")
    upload = uploaded_file(payload)
    valid_fraction = number(valid_fraction, "Validation share", 0, 0.5)
    if keep:
        access.require_owner(request, profile, "Keeping a dataset on the server")
    kept = kept_dataset_dir(upload.name, Path(upload.path).stat().st_size) if keep else None
    out = scratch_dir()
    progress(None, desc="checking, extracting and converting the zip (in a separate process)")
    try:
        with tempfile.TemporaryDirectory(prefix="nailseg-dataset-") as scratch:
            done = convert_in_child(upload.path, upload.name, kept or Path(scratch), out, valid_fraction, bool(kept))
    except ChildRefused as err:
        raise gr.Error(str(err)) from None
    except ChildFailed as err:
        raise gr.Error(
            f"Not converted: the conversion of {code(upload.name)} {err}. Labels with coordinates that are not "
            "numbers within the photo, or very large photos, can do this. Nothing was kept."
        ) from None
    finally:
        if kept and not (kept / "train.json").is_file():
            shutil.rmtree(kept, ignore_errors=True)  # nothing usable was kept: leave nothing
    text = summary_markdown(done["summary"])
    if kept:
        text += f"\n\nKept on the server for the Train tab as {code(kept.name)} (removed after {keep_hours():g} h)."
    shown = [(png, caption) for png, caption in done["preview"]]
    return text, shown, str(write_zip(out / "coco", out / "coco.zip")), done["summary"]


def dataset_tab() -> None:
    """Build the tab's components and events inside the current ``gr.Tab``."""
    gr.Markdown(
        "Upload a `.zip` holding `Images/` + `Masks/` (semantic masks), COCO instances with their photos "
        "(CVAT's *COCO 1.0* export, Roboflow's *COCO Segmentation*, or an `annotations.json` beside the "
        "photos) or `images/` + `labels/` (YOLO-seg polygons). It is deleted once converted, unless the "
        "owner keeps it to train on."
    )
    with gr.Row():
        with gr.Column():
            archive = gr.File(label="Dataset (.zip)", file_types=[".zip"], elem_id="dataset-zip")
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
        preprocess=False,  # the handler checks what was sent (serving.uploaded_file)
    )
