"""Where run data goes, with and without persistent storage (``/data`` on Spaces), and how long it stays."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from support import AppProcess

from nailseg import paths
from nailseg.files import remove_older_than

DAY = 24 * 3600


@pytest.fixture
def env(monkeypatch):
    for var in ("NAILSEG_WORK_DIRS", "NAILSEG_CONVERTED_DIR", "NAILSEG_PERSISTENT_DIR", "HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_with_persistent_storage_run_data_goes_there(env, tmp_path):
    env.setenv("NAILSEG_PERSISTENT_DIR", str(tmp_path))
    assert paths.work_root() == tmp_path / "nailseg" / "work_dirs"
    assert paths.converted_root() == tmp_path / "nailseg" / "converted"
    assert paths.hub_cache_dir() == tmp_path / "nailseg" / "hf_home" / "hub"
    env.setenv("HF_HOME", str(tmp_path / "mine"))  # the user's own choice wins
    assert paths.hub_cache_dir() is None
    env.setenv("NAILSEG_CONVERTED_DIR", str(tmp_path / "elsewhere"))
    assert paths.converted_root() == tmp_path / "elsewhere"


def test_without_it_the_usual_places(env, tmp_path):
    env.setenv("NAILSEG_PERSISTENT_DIR", str(tmp_path / "absent"))
    env.chdir(tmp_path)
    assert paths.persistent_root() is None and paths.hub_cache_dir() is None
    assert paths.work_root() == tmp_path / "work_dirs"
    assert paths.converted_root() == Path(tempfile.gettempdir()) / "nailseg-converted"


def aged(folder: Path, days: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "train.json").write_text("{}")
    stamp = time.time() - days * DAY
    os.utime(folder, (stamp, stamp))
    return folder


def test_remove_older_than(tmp_path):
    old, new, running = aged(tmp_path / "old", 2), aged(tmp_path / "new", 0.5), aged(tmp_path / "running", 3)
    assert remove_older_than(tmp_path, 24, keep=(running,)) == [old]
    assert not old.exists() and new.exists() and running.exists()
    assert remove_older_than(tmp_path / "absent", 24) == []


def test_a_kept_dataset_past_its_time_is_gone_after_an_app_start(tmp_path):
    data = tmp_path / "data"
    converted = data / "nailseg" / "converted"
    old, fresh = aged(converted / "old-20260101", 2), aged(converted / "fresh-20260101", 0.1)
    env = {"NAILSEG_PERSISTENT_DIR": str(data), "NAILSEG_CONVERTED_DIR": None, "NAILSEG_KEEP_HOURS": "24"}
    app = AppProcess(tmp_path / "app", extra_env=env)
    try:
        assert not old.exists() and fresh.exists()
    finally:
        app.stop()


def test_a_kept_dataset_past_its_time_is_gone_after_the_next_conversion(env, tmp_path):
    from nailseg.tabs.dataset import kept_dataset_dir

    env.setenv("NAILSEG_PERSISTENT_DIR", str(tmp_path))
    env.setenv("NAILSEG_KEEP_HOURS", "1")
    converted = paths.converted_root()
    old = aged(converted / "old-20260101", 0.5)
    new = kept_dataset_dir("mine.zip", 1000)
    assert not old.exists() and new.parent == converted and new.name.startswith("mine-")
