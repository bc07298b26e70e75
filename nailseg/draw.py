"""Pure drawing and cropping: functions of (photo, ``Nails``) that return new arrays.

Photos are ``(H, W, 3) uint8 RGB``; cut-outs are ``(h, w, 4) uint8 RGBA``. Nothing here runs the
model or touches files.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from nailseg.result import Nails

# Distinct, colour-blind-friendly colours (Okabe-Ito), RGB.
PALETTE = np.array(
    [
        (230, 159, 0),
        (86, 180, 233),
        (0, 158, 115),
        (240, 228, 66),
        (0, 114, 178),
        (213, 94, 0),
        (204, 121, 167),
        (255, 255, 255),
    ],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class CropOptions:
    """How nail crops are cut for a downstream classifier.

    Attributes:
        margin: extra context around the box, as a fraction of the box's longer side.
        square: pad the window to a square (classifiers expect square inputs).
        size: resize each crop to ``size x size`` pixels (implies ``square``); None keeps pixels.
        mask_background: paint everything outside the nail's mask black in box crops.
    """

    margin: float = 0.1
    square: bool = False
    size: int | None = None
    mask_background: bool = False


def overlay(image_rgb: np.ndarray, nails: Nails, alpha: float = 0.45, boxes: bool = True) -> np.ndarray:
    """Photo with each nail's mask tinted, its box drawn and its number written.

    Args:
        image_rgb: ``(H, W, 3) uint8`` RGB photo.
        nails: nails of this photo (numbered in their order, from 1).
        alpha: mask opacity in ``[0, 1]``.
        boxes: also draw boxes.

    Returns:
        ``(H, W, 3) uint8`` RGB image; ``image_rgb`` is not modified.
    """
    out = image_rgb.copy()
    thickness = max(1, round(max(image_rgb.shape[:2]) / 400))
    for k in range(len(nails)):
        color = PALETTE[k % len(PALETTE)]
        m = nails.masks[k]
        out[m] = (out[m] * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color.tolist(), thickness)
    for k in range(len(nails)):
        color = PALETTE[k % len(PALETTE)].tolist()
        x0, y0, x1, y1 = np.round(nails.boxes_xyxy[k]).astype(int)
        if boxes:
            cv2.rectangle(out, (x0, y0), (x1, y1), color, thickness)
        _label(out, str(k + 1), (x0, y0), color, thickness)
    return out


def _label(img: np.ndarray, text: str, corner: tuple[int, int], color: list[int], thickness: int) -> None:
    scale = 0.5 * thickness
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = max(corner[0], 0), max(corner[1], h + base + 2)
    cv2.rectangle(img, (x, y - h - base - 2), (x + w + 4, y), color, -1)
    cv2.putText(img, text, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)


def crop_window(box_xyxy: np.ndarray, options: CropOptions) -> tuple[int, int, int, int]:
    """Integer window ``(x0, y0, x1, y1)`` around a box; it may extend past the photo's edges."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    pad = options.margin * max(x1 - x0, y1 - y0)
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    if options.square or options.size:
        side = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    x0, y0 = int(np.floor(x0)), int(np.floor(y0))
    return x0, y0, max(int(np.ceil(x1)), x0 + 1), max(int(np.ceil(y1)), y0 + 1)


def _cut(array: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """Slice a window out of ``(H, W, ...)``, zero-padding where it leaves the array."""
    x0, y0, x1, y1 = window
    h, w = array.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, *array.shape[2:]), array.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def _resize(crop: np.ndarray, size: int | None) -> np.ndarray:
    if not size:
        return crop
    shrink = crop.shape[0] > size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crop_boxes(image_rgb: np.ndarray, nails: Nails, options: CropOptions = CropOptions()) -> list[np.ndarray]:
    """One ``(h, w, 3) uint8`` RGB crop per nail, cut by its box (see :class:`CropOptions`)."""
    crops = []
    for box, mask in zip(nails.boxes_xyxy, nails.masks):
        window = crop_window(box, options)
        crop = _cut(image_rgb, window)
        if options.mask_background:
            crop = crop * _cut(mask, window)[..., None]
        crops.append(_resize(crop, options.size))
    return crops


def cutouts(image_rgb: np.ndarray, nails: Nails, options: CropOptions = CropOptions()) -> list[np.ndarray]:
    """One ``(h, w, 4) uint8`` RGBA cut-out per nail: the nail's pixels, transparent elsewhere."""
    rgba = np.dstack([image_rgb, np.zeros(image_rgb.shape[:2], np.uint8)])
    out = []
    for box, mask in zip(nails.boxes_xyxy, nails.masks):
        window = crop_window(box, options)
        crop = _cut(rgba, window)
        crop[..., 3] = _cut(mask, window).astype(np.uint8) * 255
        out.append(_resize(crop, options.size))
    return out


def combined_mask(nails: Nails) -> np.ndarray:
    """``(H, W) uint8`` mask, 0 = background, 255 = any nail."""
    return (nails.masks.any(axis=0) * 255).astype(np.uint8) if len(nails) else np.zeros(nails.image_size, np.uint8)
