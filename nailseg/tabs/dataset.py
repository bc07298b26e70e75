"""Dataset → COCO tab: a zipped dataset in, statistics, a preview and train/valid COCO files out.

Archives are untrusted: :func:`check_archive` refuses them before anything is written, and
:func:`extract_archive` writes only regular files inside the target folder. The upload and the
extracted photos are deleted before the answer is returned, unless the user asks to keep the
dataset on the server for the Train tab (then it goes to ``CONVERTED_ROOT/<name>/``).
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import time
import zipfile
from contextlib import nullcontext
from pathlib import Path, PurePosixPath

import gradio as gr
import numpy as np

from nailseg import draw
from nailseg.datasets import convert_dataset, save_report
from nailseg.evaluate import coco_nails
from nailseg.images import ImageError, load_image_rgb
from nailseg.serving import scratch_dir
from nailseg.tabs.segment import forget_upload, write_zip

MAX_MEMBERS = 50_000
MAX_TOTAL_BYTES = 4 * 1024**3  # uncompressed
# Photos and PNG masks barely compress; a large member that shrinks more than this is a bomb.
MAX_RATIO, RATIO_FROM_BYTES = 200, 50 * 1024**2
PREVIEW_PHOTOS = 4


class UnsafeArchive(ValueError):
    """A zip that is refused; the message says why."""


def check_archive(members: list[zipfile.ZipInfo], max_members: int = MAX_MEMBERS,
                  max_total_bytes: int = MAX_TOTAL_BYTES) -> None:  # fmt: skip
    """Refuse an archive before extracting anything.

    Refused: more than ``max_members`` entries; absolute names or names with ``..``; links and
    other special files; more than ``max_total_bytes`` uncompressed; a member of at least
    ``RATIO_FROM_BYTES`` that compresses more than ``MAX_RATIO``:1 (a zip bomb).

    Raises:
        UnsafeArchive: the first reason found.
    """
    if len(members) > max_members:
        raise UnsafeArchive(f"too many files in the zip ({len(members)}; the limit is {max_members})")
    total = 0
    for info in members:
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchive(f"absolute path in the zip: {info.filename!r}")
        if ".." in PurePosixPath(name).parts:
            raise UnsafeArchive(f"path leaving the folder ('..') in the zip: {info.filename!r}")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix file type recorded (e.g. made on Windows)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind = "link" if kind == stat.S_IFLNK else "special file"
            raise UnsafeArchive(f"{kind} in the zip: {info.filename!r} (only plain files and folders are accepted)")
        total += info.file_size
        if total > max_total_bytes:
            raise UnsafeArchive(f"the zip unpacks to more than {max_total_bytes / 1024**3:.1f} GiB")
        if info.file_size >= RATIO_FROM_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise UnsafeArchive(
                f"zip bomb: {info.filename!r} expands {ratio:.0f}:1 to {info.file_size / 1024**2:.0f} MiB")


def extract_archive(zip_path: str | Path, dest: Path) -> Path:
    """Check and extract a zip into ``dest``; returns the dataset root inside it.

    The root is ``dest`` itself, or its only folder when the zip wraps everything in one.

    Raises:
        UnsafeArchive: see :func:`check_archive`; also a zip that is not a zip.
    """
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise UnsafeArchive(f"not a readable zip file ({err})") from err
    with zf:
        members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
        check_archive(members)
        for info in members:
            target = dest / info.filename.replace("\\", "/")
            if not target.resolve().is_relative_to(dest.resolve()):  # belt and braces after check_archive
                raise UnsafeArchive(f"path leaving the folder in the zip: {info.filename!r}")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:  # zipfile stops at the declared size
                shutil.copyfileobj(src, dst)
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def preview(root: Path, coco: dict, count: int = PREVIEW_PHOTOS) -> list[tuple[np.ndarray, str]]:
    """Up to ``count`` photos of ``coco`` with their nails drawn, as ``(H, W, 3) uint8 RGB``."""
    shown = []
    for image in coco["images"][:count]:
        try:
            rgb = load_image_rgb(root / image["file_name"])
        except (ImageError, OSError):
            continue
        nails = coco_nails(coco, image)
        shown.append((draw.overlay(rgb, nails), f"{image['file_name']}: {len(nails)} nail(s)"))
    return shown


def summary_markdown(summary: dict) -> str:
    """Statistics of a conversion, for people."""
    lines = [
        f"**{summary['photos']} photos, {summary['nails']} nails** ({summary['nails_per_photo']} per photo), "
        f"layout: {summary['layout']}",
        f"- train: {summary['train']['photos']} photos, {summary['train']['nails']} nails",
        f"- valid: {summary['valid']['photos']} photos, {summary['valid']['nails']} nails",
        "- groups: " + (", ".join(f"{k} ({v})" for k, v in summary["groups"].items()) or "none"),
    ]
    problems = summary["problems"]
    lines.append(f"\n**Problems: {len(problems)}**" if problems else "\nNo problems found.")
    lines += [f"- `{p['file']}`: {p['problem']}" for p in problems[:50]]
    if len(problems) > 50:
        lines.append(f"- … and {len(problems) - 50} more (see manifest and the COCO files)")
    return "\n".join(lines)


def kept_dataset_dir(zip_path: str) -> Path:
    """A new folder for a dataset kept for the Train tab, where that tab looks for datasets."""
    from nailseg.tabs.train import CONVERTED_ROOT

    folder = CONVERTED_ROOT / f"{Path(zip_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True)
    return folder


def convert_zip(zip_path: str | None, valid_fraction: float, keep: bool = False,
                progress=gr.Progress(track_tqdm=True)):  # fmt: skip
    """The ``convert_dataset`` API: a zipped dataset in; statistics, a preview and a zip of COCO files out.

    With ``keep``, the photos and COCO files stay on the server for the Train tab; otherwise
    nothing of the upload is left once the answer is returned.
    """
    if not zip_path:
        raise gr.Error("Upload a .zip of a dataset first.")
    kept = kept_dataset_dir(zip_path) if keep else None
    with nullcontext(kept) if kept else tempfile.TemporaryDirectory(prefix="nailseg-dataset-") as folder:
        try:
            progress(0, desc="checking and extracting the zip")
            root = extract_archive(zip_path, Path(folder))
            report = convert_dataset(root, valid_fraction=float(valid_fraction), progress=True)
        except ValueError as err:  # UnsafeArchive, or no dataset layout found
            if kept:
                shutil.rmtree(kept, ignore_errors=True)
            if isinstance(err, UnsafeArchive):
                raise gr.Error(f"Zip refused: {err}.") from err
            raise gr.Error(str(err).replace(str(folder), "the zip")) from err
        finally:
            forget_upload(zip_path)
        out = scratch_dir()
        save_report(report, out / "coco")
        if kept:
            save_report(report, kept)  # the Train tab finds it by its train.json
        shown = preview(root, report.train if report.train["images"] else report.valid)
    summary = report.summary()
    summary["root"] = Path(zip_path).name
    text = summary_markdown(summary)
    if kept:
        text += f"\n\nKept on the server for the Train tab: `{kept}`"
    return text, shown, str(write_zip(out / "coco", out / "coco.zip")), summary


def dataset_tab() -> None:
    """Build the tab's components and events inside the current ``gr.Tab``."""
    gr.Markdown("Upload a `.zip` holding `Images/` + `Masks/` (semantic masks) or `images/` + `labels/` "
                "(YOLO-seg polygons). It is deleted once converted, unless you keep it to train on.")  # fmt: skip
    with gr.Row():
        with gr.Column():
            archive = gr.File(label="Dataset (.zip)", file_types=[".zip"], elem_id="dataset-zip")
            valid_fraction = gr.Slider(0.0, 0.5, value=0.2, step=0.05, label="Validation share")
            keep = gr.Checkbox(False, label="Keep the photos on the server to train on them (Train tab)")
            button = gr.Button("Convert", variant="primary")
        with gr.Column():
            stats = gr.Markdown(elem_id="dataset-stats")
            download = gr.File(label="train.json, valid.json, manifest.csv", elem_id="coco-zip")
    gallery = gr.Gallery(label="Preview (annotations drawn)", columns=4, height=300)
    summary = gr.JSON(label="Summary", visible=False)
    button.click(convert_zip, [archive, valid_fraction, keep], [stats, gallery, download, summary],
                 api_name="convert_dataset", concurrency_limit=1)  # fmt: skip
