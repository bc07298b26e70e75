"""Photo decoding: every mode becomes RGB, EXIF is honoured, bad files say what is wrong."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from nailseg.images import ImageError, exif_size, fit_within, load_image_rgb


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


RGB = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "data, shape",
    [
        (encode(RGB, "PNG"), (30, 40, 3)),
        (encode(RGB, "JPEG"), (30, 40, 3)),
        (encode(RGB.convert("L"), "PNG"), (30, 40, 3)),  # grayscale
        (encode(RGB.convert("RGBA"), "PNG"), (30, 40, 3)),
        (encode(RGB.convert("P"), "PNG"), (30, 40, 3)),
        (encode(RGB.convert("CMYK"), "JPEG"), (30, 40, 3)),
        (encode(Image.fromarray(np.full((30, 40), 40000, np.uint16)), "PNG"), (30, 40, 3)),  # 16-bit
    ],
)
def test_modes_become_rgb(data, shape):
    rgb = load_image_rgb(data)
    assert rgb.shape == shape and rgb.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped():
    rgb = load_image_rgb(encode(Image.fromarray(np.full((4, 4), 32768, np.uint16)), "PNG"))
    assert 120 <= rgb[0, 0, 0] <= 135


def test_rgba_is_composited_on_white():
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert (load_image_rgb(encode(transparent, "PNG")) == 255).all()


def test_exif_rotation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    RGB.save(path, exif=exif)
    assert load_image_rgb(path).shape == (40, 30, 3)
    assert exif_size(path) == (30, 40)  # width, height as displayed


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image", "not a readable image"),
        (encode(RGB, "JPEG")[:200], "truncated|not a readable"),
    ],
)
def test_bad_files_say_why(data, message):
    with pytest.raises(ImageError, match=message):
        load_image_rgb(data)


def test_huge_photo_is_refused_before_decoding():
    big = encode(Image.new("L", (9000, 7000)), "PNG")  # 63 MP, compresses to a few KB
    with pytest.raises(ImageError, match="MP"):
        load_image_rgb(big)


@pytest.mark.parametrize(
    ("shape", "expected"), [((100, 50, 3), (100, 50, 3)), ((4096, 1024, 3), (2048, 512, 3)), ((10, 5000), (4, 2048))]
)
def test_fit_within(shape, expected):
    image, scale = fit_within(np.zeros(shape, np.uint8), 2048)
    assert image.shape == expected
    assert scale == min(1.0, 2048 / max(shape[:2]))
