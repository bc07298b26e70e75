"""A visitor's dataset zip to COCO files and a preview: the Dataset tab's work, in a child process.

Everything here parses what a stranger sent (the zip, photos, masks, labels), so the tab calls
:func:`convert_in_child`, which runs :func:`convert_zip` through :func:`nailseg.sandbox.run_limited`
within :func:`limits_for` the zip. A crash or a runaway allocation in a C library then costs that
visitor's answer, not the server. No Gradio here: the child starts in about a second.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nailseg import draw
from nailseg.archives import UnsafeArchive, extract_archive
from nailseg.datasets import ConversionReport, convert_dataset, save_report
from nailseg.evaluate import coco_nails
from nailseg.images import ImageError, fit_within, load_image_rgb
from nailseg.sandbox import Limits, run_limited

PREVIEW_PHOTOS = 4
PREVIEW_SIDE = 1024
MEMORY_BYTES = 3 * 1024**3  # a 60 MP photo's masks one at a time, its preview, and the libraries
# CPU seconds: the start (~2 s) and a margin, then per MiB of zip. Conversion reads sizes from
# headers and decodes only masks (~0.03 CPU s per MiB of honest data, bench/README.md), so a zip
# that costs more per byte is made to: 3.7 KB claiming a 59 MP photo with 500 polygons took 66 s.
CPU_BASE_S, CPU_S_PER_MIB = 30.0, 2.0


def limits_for(zip_bytes: int) -> Limits:
    """The limits of one conversion: fixed memory, CPU time growing with the zip, wall time 3x that (it runs niced)."""
    cpu_s = CPU_BASE_S + CPU_S_PER_MIB * zip_bytes / 1024**2
    return Limits(memory_bytes=MEMORY_BYTES, cpu_s=cpu_s, wall_s=3 * cpu_s + 30)


def convert_in_child(zip_path: str, zip_name: str, dest: Path, out: Path, valid_fraction: float, keep: bool) -> dict:
    """:func:`convert_zip` in a child process within :func:`limits_for` the zip; same arguments and result.

    Raises:
        nailseg.sandbox.ChildRefused: the zip was refused (the message is for the visitor).
        nailseg.sandbox.ChildFailed: the conversion crashed, or ran out of memory or time.
    """
    kwargs = {
        "zip_path": str(zip_path),
        "zip_name": zip_name,
        "dest": str(dest),
        "out": str(out),
        "valid_fraction": valid_fraction,
        "keep": keep,
    }
    return run_limited(f"{__name__}:convert_zip", kwargs, limits_for(Path(zip_path).stat().st_size))


def convert_zip(zip_path: str, zip_name: str, dest: str, out: str, valid_fraction: float, keep: bool) -> dict:
    """Check and extract a zip into ``dest``, convert it, and write what the visitor downloads into ``out``.

    Writes ``out/coco/`` (``train.json``, ``valid.json``, ``manifest.csv``, with no server path in
    them) and ``out/preview/<k>.png``; with ``keep``, also the COCO files into ``dest``, where they
    name the photos' folder for training.

    Returns:
        ``{"summary": ConversionReport.summary() with the zip's name as root, "preview": [[png, caption], ...]}``

    Raises:
        ValueError: the zip is refused, or holds no dataset; the message is for the visitor and
            names no server path.
    """
    dest, out = Path(dest), Path(out)
    try:
        report = convert_archive(zip_path, dest, valid_fraction=valid_fraction, workers=1, progress=False)
    except ValueError as err:  # no dataset layout found: the message names the folder
        raise ValueError(str(err).replace(str(dest.resolve()), "the zip")) from None
    if keep:
        save_report(report, dest)  # the Train tab finds it by its train.json
    save_report(without_server_paths(report), out / "coco")
    preview = save_preview(report.root, report.train if report.train["images"] else report.valid, out / "preview")
    return {"summary": {**report.summary(), "root": zip_name}, "preview": preview}


def convert_archive(zip_path: str | Path, dest: Path, **options) -> ConversionReport:
    """Check and extract a dataset zip into ``dest`` (:mod:`nailseg.archives`), then convert it.

    Args:
        options: as :func:`nailseg.datasets.convert_dataset`'s.

    Returns:
        The report, its problems led by the zip's members that were skipped.

    Raises:
        ValueError: the zip is refused (``Zip refused: ...``), or holds no dataset.
    """
    try:
        root, problems = extract_archive(zip_path, dest)
    except UnsafeArchive as err:
        raise ValueError(f"Zip refused: {err}.") from None
    report = convert_dataset(root, **options)
    report.problems = problems + report.problems
    return report


def without_server_paths(report: ConversionReport) -> ConversionReport:
    """``report`` with no ``info.dataset_root`` in its COCO dicts: a visitor's download names no server folder."""

    def cleaned(coco: dict) -> dict:
        return {**coco, "info": {k: v for k, v in coco.get("info", {}).items() if k != "dataset_root"}}

    return dataclasses.replace(report, train=cleaned(report.train), valid=cleaned(report.valid))


def save_preview(root: Path, coco: dict, folder: Path, count: int = PREVIEW_PHOTOS) -> list[list[str]]:
    """Up to ``count`` photos of ``coco`` with their nails drawn, as PNGs at most ``PREVIEW_SIDE`` px.

    Returns:
        ``[[png path, caption], ...]``; photos that cannot be read are left out.
    """
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    shown = []
    for k, image in enumerate(coco["images"][:count]):
        try:
            rgb = load_image_rgb(root / image["file_name"])
        except ImageError:
            continue
        nails = coco_nails(coco, image)
        png = folder / f"{k}.png"
        Image.fromarray(fit_within(draw.overlay(rgb, nails), PREVIEW_SIDE)[0]).save(png)
        shown.append([str(png), f"{image['file_name']}: {len(nails)} nail(s)"])
    return shown
