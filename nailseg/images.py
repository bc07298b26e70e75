"""Reading photos the way a user expects: EXIF orientation applied, any mode turned into RGB."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})  # any case
# A 50-megapixel phone photo is fine; larger is almost surely a mistake or a decompression bomb.
MAX_PIXELS = 60_000_000
MAX_ASPECT = 20  # a photo of a hand is never thinner; the model's resize fails on a 1 px side
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
# EXIF orientation -> the transpose that shows the photo the right way up (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "CMYK", "I", "F"}  # modes Image.reduce averages correctly


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
        max_side: shrink so that the longer side is at most this (see :func:`fit_within`). A JPEG
            is then decoded at a reduced scale directly; any other format is shrunk as soon as
            it is decoded, before any copy (see :func:`_decode`).

    Raises:
        ImageError: empty, truncated, not an image, larger than ``max_pixels`` or thinner than
            ``MAX_ASPECT``. The message never names a path.
    """
    try:
        im = _open(source)
        _check_size(im.width, im.height, max_pixels)
        with DECODING.hold(4 * im.width * im.height):  # Pillow's 4 bytes a pixel, at full size
            rgb = _to_rgb(_decode(im, max_side))
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


def _open(source: str | Path | bytes | Image.Image) -> Image.Image:
    """The image, opened lazily (header only); an empty file is an :class:`ImageError`."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes):
        if not source:
            raise ImageError("the file is empty (0 bytes)")
        return Image.open(io.BytesIO(source))
    if Path(source).stat().st_size == 0:
        raise ImageError("the file is empty (0 bytes)")
    return Image.open(source)


def _check_size(width: int, height: int, max_pixels: int) -> None:
    """Refuse, from the header, a photo with too many pixels or too thin to hold a nail."""
    if width * height > max_pixels:
        raise ImageError(
            f"the photo is {width}x{height} ({width * height / 1e6:.0f} MP); the limit is {max_pixels / 1e6:.0f} MP"
        )
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise ImageError(f"the photo is {width}x{height} px: one side is more than {MAX_ASPECT} times the other")


def _decode(im: Image.Image, max_side: int | None) -> Image.Image:
    """Decode ``im``, EXIF orientation applied, shrunk toward ``max_side`` as early as its format allows.

    A JPEG is decoded at 1/2, 1/4 or 1/8 scale (``draft``). Other formats (PNG, TIFF, WebP, BMP)
    can only be decoded whole: the full-size image is reduced by a whole factor at once, so that
    it is the only full-size copy (rotating, converting and compositing then work on the small
    one). A 59 MP PNG shrunk to 1,600 px peaks at its decoded size instead of about four times it.
    """
    if max_side and im.format == "JPEG":
        scale = max_side / max(im.size)
        im.draft("RGB", (max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    im.load()
    orientation = _orientation(im)  # after load: a PNG's eXIf chunk may follow its pixels
    factor = max(im.size) // max_side if max_side else 1
    if factor >= 2:
        im = _reducible(im).reduce(factor)
    return im.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else im


def _reducible(im: Image.Image) -> Image.Image:
    """``im`` in a mode whose pixels ``Image.reduce`` may average (not palette indices, not 16-bit)."""
    if im.mode in _REDUCIBLE:
        return im
    if im.mode.startswith("I;16"):
        return im.convert("I")  # keeps the values: _to_rgb scales them to 8 bits
    if im.mode == "1":
        return im.convert("L")
    return im.convert("RGBA" if im.mode in ("PA", "P") and _transparent(im) else "RGB")


def _transparent(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


class _MemoryBudget:
    """Bytes that full-size decodes in progress may take together; a decode waits for its share.

    Whatever the number of requests at once, decoding never takes more than ``total`` (a photo
    larger than that decodes alone).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self._used = 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        nbytes = min(nbytes, self.total)
        with self._free:
            self._free.wait_for(lambda: self._used + nbytes <= self.total)
            self._used += nbytes
        try:
            yield
        finally:
            with self._free:
                self._used -= nbytes
                self._free.notify_all()


DECODING = _MemoryBudget(256 * 1024**2)  # one 60 MP photo at a time, or five of a phone's 12 MP


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
    if _transparent(im):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
