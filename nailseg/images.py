"""Reading photos the way a user expects: EXIF orientation applied, any mode turned into RGB."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})  # any case
# A 50-megapixel phone photo is fine; larger is almost surely a mistake or a decompression bomb.
MAX_PIXELS = 60_000_000
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


class ImageError(ValueError):
    """A photo that cannot be used; the message says why, in words a user understands."""


def fit_within(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` shrunk so that its longer side is at most ``max_side`` (aspect kept), and the scale.

    Returns:
        ``(image, scale)``: the input itself and 1.0 when it already fits.
    """
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale == 1.0:
        return image, scale
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def exif_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of a photo after EXIF rotation, read from the header only."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = _orientation(im)
    except Image.DecompressionBombError as err:
        raise ImageError("the image is too large (over Pillow's decompression-bomb limit)") from err
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"not a readable image ({err.__class__.__name__})") from err
    return (height, width) if orientation in _ROTATED else (width, height)


def _orientation(im: Image.Image) -> int:
    """EXIF orientation tag without decoding pixels (PNG's ``getexif`` would decode them all)."""
    if im.format == "PNG":
        raw = im.info.get("exif")  # an eXIf chunk ahead of the pixel data
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return exif.get(0x0112, 1)
    return im.getexif().get(0x0112, 1)


def load_image_rgb(
    source: str | Path | bytes | Image.Image, max_pixels: int = MAX_PIXELS, max_side: int | None = None
) -> np.ndarray:
    """Decode a photo into an ``(H, W, 3) uint8 RGB`` array, EXIF orientation applied.

    Grayscale, palette, RGBA (composited on white), CMYK and 16-bit photos are all converted.

    Args:
        source: a file path, the file's bytes, or an opened PIL image.
        max_pixels: refuse photos with more pixels than this (checked from the header).
        max_side: shrink so that the longer side is at most this (see :func:`fit_within`); a JPEG
            is then decoded at a reduced scale directly, which takes a fraction of the memory.

    Raises:
        ImageError: empty, truncated, not an image, or larger than ``max_pixels``. The message
            never names a path.
    """
    try:
        if isinstance(source, Image.Image):
            im = source
        else:
            if isinstance(source, bytes):
                if not source:
                    raise ImageError("the file is empty (0 bytes)")
                im = Image.open(io.BytesIO(source))
            else:
                if Path(source).stat().st_size == 0:
                    raise ImageError("the file is empty (0 bytes)")
                im = Image.open(source)
        if im.width * im.height > max_pixels:
            raise ImageError(
                f"the photo is {im.width}x{im.height} ({im.width * im.height / 1e6:.0f} MP); "
                f"the limit is {max_pixels / 1e6:.0f} MP"
            )
        if max_side and im.format == "JPEG":
            scale = max_side / max(im.size)
            im.draft("RGB", (max(1, round(im.width * scale)), max(1, round(im.height * scale))))
        im.load()
        im = ImageOps.exif_transpose(im)
        rgb = _to_rgb(im)
        return fit_within(rgb, max_side)[0] if max_side else rgb
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError("the photo is too large (over Pillow's decompression-bomb limit)") from err
    except FileNotFoundError as err:
        raise ImageError("the file is no longer on the server: add it again") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if "truncated" in str(err).lower():
            raise ImageError("the image file is truncated (incomplete download?)") from err
        raise ImageError(f"not a readable image ({_no_path(err)})") from err


def _no_path(err: Exception) -> str:
    """An error's own words without the file path Python's OSErrors carry."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image format Pillow reads"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) if isinstance(err, SyntaxError | ValueError) else err.__class__.__name__


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale the used range to 8 bits rather than clipping at 255.
        arr = np.asarray(im, dtype=np.float64)
        peak = arr.max() if arr.size and arr.max() > 0 else 1.0
        grey = (arr / (65535.0 if peak > 255 else 255.0) * 255.0).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
