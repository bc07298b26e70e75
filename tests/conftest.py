"""Shared fixtures: test photos, ../shared data when present, the model, the app in a subprocess."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from support import PHOTOS, SHARED, AppProcess, weights_spec

# gradio_client downloads answers into $GRADIO_TEMP_DIR and makes a folder per file in the temp
# directory; pytest's own temporary folders follow the temp directory too. All of it goes into one
# folder of this run, removed at its end: the tests leave nothing behind in /tmp.
SESSION_TMP = Path(tempfile.mkdtemp(prefix="nailseg-tests-"))
os.environ["GRADIO_TEMP_DIR"] = str(SESSION_TMP / "gradio")
tempfile.tempdir = str(SESSION_TMP)


# Property tests (Hypothesis): a few dozen examples each by default; `--hypothesis-profile thorough`
# for many more. No example database, and Hypothesis' own files go into this run's folder: the
# tests leave nothing in the checkout.
set_hypothesis_home_dir(SESSION_TMP / "hypothesis")
_PROPERTY = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("default", max_examples=50, **_PROPERTY)
settings.register_profile("thorough", max_examples=2000, **_PROPERTY)
settings.load_profile("default")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    return PHOTOS


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present (only in the development checkout)")
    return SHARED


@pytest.fixture(scope="session")
def segmenter():
    """The real model: $NAILSEG_WEIGHTS if set, else the bundled weights."""
    from nailseg.inference import load_model

    return load_model(weights_spec(), device="cpu")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app (``app.py``) serving in a subprocess on a free loopback port, one per test module."""
    server = AppProcess(tmp_path_factory.mktemp("app"))
    yield server
    server.stop()
