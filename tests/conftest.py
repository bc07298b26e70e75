"""Shared fixtures: test photos and their YOLO labels, ../shared data when present, the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).parent
ROBOFLOW = TESTS / "data" / "nails-roboflow"
SHARED = TESTS.parent.parent / "shared" / "data"


def label_masks(photo: Path) -> np.ndarray:
    """``(N, H, W) bool`` true nail masks of a test photo, from its YOLO-seg label."""
    from nailseg.convert import polygons_to_instances
    from nailseg.datasets import load_yolo_polygons
    from nailseg.images import exif_size

    width, height = exif_size(photo)
    polygons = load_yolo_polygons(ROBOFLOW / "labels" / f"{photo.stem}.txt", width, height)
    masks = polygons_to_instances(polygons, height, width)
    return np.stack(masks) if masks else np.zeros((0, height, width), bool)


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    return sorted((ROBOFLOW / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present (only in the development checkout)")
    return SHARED


@pytest.fixture(scope="session")
def segmenter():
    """The real model: $NAILSEG_WEIGHTS if set, else the bundled weights."""
    from app_support import weights_spec

    from nailseg.inference import load_model

    return load_model(weights_spec(), device="cpu")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app (``app.py``) serving in a subprocess on a free loopback port, one per test module."""
    from app_support import AppProcess

    server = AppProcess(tmp_path_factory.mktemp("app"))
    yield server
    server.stop()
