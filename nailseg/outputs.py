"""Files written for a segmented photo: overlay, crops, cut-outs, masks (the edge of draw.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nailseg import draw
from nailseg.result import Nails


def save_png(path: Path, image: np.ndarray) -> Path:
    """Write ``(H, W) grey``, ``(H, W, 3) RGB`` or ``(H, W, 4) RGBA`` uint8 as PNG."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")
    return path


def save_nail_files(
    out_dir: Path, stem: str, image_rgb: np.ndarray, nails: Nails, options: draw.CropOptions = draw.CropOptions(),
    masks: bool = False,
) -> list[Path]:
    """Write ``<stem>_overlay.png`` and ``crops/<stem>_<k>_box.png`` / ``_cutout.png`` (k from 1).

    With ``masks``, also ``masks/<stem>_<k>.png`` per nail and ``masks/<stem>_all.png`` (0/255).
    Returns the paths written.
    """
    out_dir = Path(out_dir)
    written = [save_png(out_dir / f"{stem}_overlay.png", draw.overlay(image_rgb, nails))]
    for k, (box, cut) in enumerate(zip(draw.crop_boxes(image_rgb, nails, options),
                                       draw.cutouts(image_rgb, nails, options)), start=1):  # fmt: skip
        written.append(save_png(out_dir / "crops" / f"{stem}_{k}_box.png", box))
        written.append(save_png(out_dir / "crops" / f"{stem}_{k}_cutout.png", cut))
    if masks:
        for k, m in enumerate(nails.masks, start=1):
            written.append(save_png(out_dir / "masks" / f"{stem}_{k}.png", m.astype(np.uint8) * 255))
        written.append(save_png(out_dir / "masks" / f"{stem}_all.png", draw.combined_mask(nails)))
    return written


def unique_stems(paths: list[Path]) -> list[str]:
    """File stems, made unique by a ``-2``, ``-3``... suffix where two photos share one."""
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems
