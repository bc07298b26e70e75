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
        size: every crop ``size x size`` pixels: the window is a square, scaled to fit (never
            stretched); None keeps the photo's pixels.
        mask_background: paint everything outside the nail's mask black in box crops.
        align: rotate each crop so that the nail's long axis is vertical, its tip up where it can
            be told (see :func:`nail_orientation`).
    """

    margin: float = 0.1
    square: bool = False
    size: int | None = None
    mask_background: bool = False
    align: bool = False


@dataclass(frozen=True)
class NailCrop:
    """One nail cut out for a classifier.

    Attributes:
        box: ``(h, w, 3) uint8`` RGB crop of the window around the nail.
        cutout: ``(h, w, 4) uint8`` RGBA: the nail's pixels, transparent elsewhere.
        angle_deg: rotation applied to the photo, counter-clockwise as seen, in degrees (0 unaligned).
        tip: ``"up"`` when aligned with the tip told apart from the finger side, ``"unknown"`` when
            aligned without, ``""`` when not aligned.
    """

    box: np.ndarray
    cutout: np.ndarray
    angle_deg: float = 0.0
    tip: str = ""


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


def nail_orientation(image_rgb: np.ndarray, mask: np.ndarray) -> tuple[float, float, bool]:
    """The rotation that stands a nail upright, from its mask's second moments and the photo.

    The long axis comes from the mask's central moments. Which end is the tip is told from the
    photo: the finger goes on beyond the nail's root, so a strip beyond that end looks like the skin
    around the nail, while beyond the tip lies the fingertip's end and then background. The end
    whose strip is further from the skin's colour is the tip; when the two differ by less than a
    quarter, the tip is unknown and the smaller rotation is used.

    Args:
        image_rgb: ``(H, W, 3) uint8`` RGB photo.
        mask: ``(H, W) bool`` one nail.

    Returns:
        ``(angle_deg, elongation, tip_known)``: the counter-clockwise rotation (as seen) that makes
        the long axis vertical with the tip up; the long/short axis ratio; whether the tip was told.
    """
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    if m["m00"] == 0:
        return 0.0, 1.0, False
    mu20, mu02, mu11 = m["mu20"] / m["m00"], m["mu02"] / m["m00"], m["mu11"] / m["m00"]
    theta = 0.5 * np.arctan2(2 * mu11, mu20 - mu02)  # long axis, from +x towards +y (down)
    spread = np.sqrt(((mu20 - mu02) / 2) ** 2 + mu11**2)
    major, minor = (mu20 + mu02) / 2 + spread, max((mu20 + mu02) / 2 - spread, 1e-9)
    elongation = float(np.sqrt(major / minor))
    axis = np.array([np.cos(theta), np.sin(theta)])  # unit vector along the long axis, image coords
    # Rotating the view counter-clockwise by a turns a direction at angle t (clockwise as seen) to t - a.
    up = np.degrees(theta) + 90  # the rotation that sends +axis straight up
    told = _tip_sign(image_rgb, mask, axis, np.array([m["m10"], m["m01"]]) / m["m00"], major, minor)
    sign = told or (1 if abs(up) <= 90 else -1)  # untold: the smaller of the two upright rotations
    angle = up if sign > 0 else up - 180
    return float((angle + 180) % 360 - 180), elongation, told != 0


def _tip_sign(image_rgb, mask, axis, centre, major, minor) -> int:
    """+1 when the tip lies along ``+axis``, -1 along ``-axis``, 0 when it cannot be told."""
    half_len, half_wid = 2 * np.sqrt(major), 2 * np.sqrt(minor)  # ~ half extents of an ellipse
    if half_wid < 2:
        return 0
    side = np.array([-axis[1], axis[0]])
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(2, int(half_wid / 2)))
    skin = image_rgb[(ring > 0) & ~mask]
    if len(skin) < 20:
        return 0
    lab = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    skin_lab = np.median(cv2.cvtColor(skin[None], cv2.COLOR_RGB2LAB)[0].astype(np.float32), axis=0)
    height, width = mask.shape
    steps = np.linspace(1.1, 1.8, 6) * half_len
    offsets = np.linspace(-0.5, 0.5, 5) * half_wid
    distances = []
    for sign in (1, -1):
        points = centre + sign * steps[:, None, None] * axis + offsets[None, :, None] * side
        xs, ys = np.round(points[..., 0]).astype(int).ravel(), np.round(points[..., 1]).astype(int).ravel()
        inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
        # Off the photo counts as not skin: the finger rarely leaves the frame at its nail.
        far = np.full(xs.shape, 100.0)
        far[inside] = np.linalg.norm(lab[ys[inside], xs[inside]] - skin_lab, axis=1)
        distances.append(float(far.mean()))
    plus, minus = distances
    if abs(plus - minus) < 0.25 * max(plus, minus, 1e-9):
        return 0
    return 1 if plus > minus else -1


def _aligned(array: np.ndarray, box_xyxy, mask: np.ndarray, angle: float, options: CropOptions, interpolation):
    """``array`` rotated by ``angle`` about the nail's centre and cut to the window around the rotated nail."""
    ys, xs = np.nonzero(mask)
    centre = (float(xs.mean()), float(ys.mean())) if len(xs) else tuple(np.asarray(box_xyxy).reshape(2, 2).mean(0))
    rotation = cv2.getRotationMatrix2D(centre, angle, 1.0)
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]]) @ rotation.T
    if len(xs):  # the rotated mask's own box is tighter than the rotated box's
        corners = np.column_stack([xs, ys, np.ones(len(xs))]) @ rotation.T
    rotated_box = np.array([*corners.min(axis=0), *(corners.max(axis=0) + 1)])
    wx0, wy0, wx1, wy1 = crop_window(rotated_box, options)
    rotation[:, 2] -= (wx0, wy0)
    return cv2.warpAffine(array, rotation, (wx1 - wx0, wy1 - wy0), flags=interpolation, borderValue=0)


def crop_nails(image_rgb: np.ndarray, nails: Nails, options: CropOptions = CropOptions()) -> list[NailCrop]:
    """One :class:`NailCrop` per nail: a box crop and a cut-out, cut and turned as ``options`` say."""
    crops = []
    for box, mask in zip(nails.boxes_xyxy, nails.masks):
        angle, tip = 0.0, ""
        if options.align:
            angle, _, known = nail_orientation(image_rgb, mask)
            tip = "up" if known else "unknown"
            rgb = _aligned(image_rgb, box, mask, angle, options, cv2.INTER_LINEAR)
            alpha = _aligned(mask.astype(np.uint8), box, mask, angle, options, cv2.INTER_NEAREST)
        else:
            window = crop_window(box, options)
            rgb, alpha = _cut(image_rgb, window), _cut(mask, window).astype(np.uint8)
        boxed = rgb * alpha[..., None] if options.mask_background else rgb
        cutout = np.dstack([rgb, alpha * 255])
        crops.append(NailCrop(_resize(boxed, options.size), _resize(cutout, options.size), round(angle, 2), tip))
    return crops


def combined_mask(nails: Nails) -> np.ndarray:
    """``(H, W) uint8`` mask, 0 = background, 255 = any nail."""
    return (nails.masks.any(axis=0) * 255).astype(np.uint8) if len(nails) else np.zeros(nails.image_size, np.uint8)
