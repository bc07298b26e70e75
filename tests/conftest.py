"""Shared fixtures: test photos and their YOLO labels, ../shared data when present, the model."""

from __future__ import annotations

import os
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
    from nailseg.inference import load_model
    from nailseg.weights import BUNDLED_WEIGHTS

    if not os.environ.get("NAILSEG_WEIGHTS") and not BUNDLED_WEIGHTS.is_file():
        pytest.fail(f"bundled weights {BUNDLED_WEIGHTS} missing")
    return load_model(device="cpu")
