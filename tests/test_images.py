"""Photo decoding: every mode becomes RGB, EXIF is honoured, bad files say what is wrong."""

from __future__ import annotations

import io
import subprocess
import sys
import threading

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


def gradient(width: int, height: int) -> Image.Image:
    """A smooth RGB picture (averages are then comparable, whatever the shrinking method)."""
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    return Image.fromarray(np.dstack([x, y, (x + y) / 2]).astype(np.uint8))


def rotated_png(im: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(im, "PNG", exif=exif.tobytes())


BIG = gradient(1200, 900)
SHRUNK = [
    ("rgb-png", encode(BIG, "PNG")),
    ("grey-png", encode(BIG.convert("L"), "PNG")),
    ("grey-alpha-png", encode(BIG.convert("LA"), "PNG")),
    ("palette-png", encode(BIG.convert("P"), "PNG")),
    ("palette-transparent-png", encode(BIG.convert("P"), "PNG", transparency=0)),
    ("rgba-png", encode(BIG.convert("RGBA"), "PNG")),
    ("bilevel-png", encode(BIG.convert("1"), "PNG")),
    ("16bit-png", encode(Image.fromarray(np.asarray(BIG.convert("L"), np.uint16) * 257), "PNG")),
    ("rgb-tiff", encode(BIG, "TIFF")),
    ("cmyk-tiff", encode(BIG.convert("CMYK"), "TIFF")),
    ("webp", encode(BIG, "WEBP", lossless=True)),
    ("bmp", encode(BIG, "BMP")),
    ("jpeg", encode(BIG, "JPEG", quality=95)),
    ("rotated-png", rotated_png(BIG)),
]


@pytest.mark.parametrize("data", [d for _, d in SHRUNK], ids=[k for k, _ in SHRUNK])
def test_shrinking_while_decoding_shows_the_same_picture(data):
    """Every format shrunk as it is decoded looks like the full decode shrunk afterwards."""
    early = load_image_rgb(data, max_side=300)
    late = fit_within(load_image_rgb(data), 300)[0]
    assert early.shape == late.shape and early.dtype == np.uint8
    assert np.abs(early.astype(int) - late).mean() < 3


def test_a_large_png_peaks_at_its_decoded_size(tmp_path):
    """A 59 MP PNG shrunk to 1,600 px: one full-size image (4 bytes a pixel, 236 MB), not four (787 MB before)."""
    from support import grey_png

    png = grey_png(tmp_path / "big.png", 7680, 7680)
    measure = (
        "import resource, sys; from nailseg.images import load_image_rgb; "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        f"rgb = load_image_rgb({str(png)!r}, max_side=1600); "
        "print(rgb.shape[0], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)"
    )
    answer = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True, check=True)
    side, grown_mb = answer.stdout.split()
    assert int(side) == 1600 and int(grown_mb) < 7680 * 7680 * 4 / 1024**2 * 1.4


def test_decodes_at_once_share_one_memory_budget():
    from nailseg.images import _MemoryBudget

    budget = _MemoryBudget(100)
    first_in, second_in, release = threading.Event(), threading.Event(), threading.Event()

    def decode(entered: threading.Event, nbytes: int) -> None:
        with budget.hold(nbytes):
            entered.set()
            release.wait(10)

    threads = [threading.Thread(target=decode, args=(entered, 60)) for entered in (first_in, second_in)]
    threads[0].start()
    assert first_in.wait(10)
    threads[1].start()
    assert not second_in.wait(0.3)  # 60 + 60 > 100: the second waits...
    release.set()
    assert second_in.wait(10)  # ...until the first is done
    for thread in threads:
        thread.join(10)
    with budget.hold(10**9):  # more than the whole budget: decodes alone, never waits forever
        pass


@pytest.mark.parametrize(
    ("size", "thin"), [((1, 1), False), ((5000, 1), True), ((1, 5000), True), ((400, 20), False), ((400, 19), True)]
)
def test_photos_too_thin_for_a_nail_are_refused(size, thin):
    data = encode(Image.new("RGB", size), "PNG")
    if thin:
        with pytest.raises(ImageError, match=f"{size[0]}x{size[1]} px: one side is more than 20 times the other"):
            load_image_rgb(data, max_side=1600)
    else:
        assert load_image_rgb(data, max_side=1600).shape == (size[1], size[0], 3)
