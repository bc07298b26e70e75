"""nailseg.sandbox: a function run in a child process with limits, and every way the child can end."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from support import REPO

from nailseg.sandbox import ChildFailed, ChildRefused, Limits, run_limited

LIMITS = Limits(memory_bytes=2 * 1024**3, cpu_s=30, wall_s=60)


@pytest.fixture(autouse=True)
def child_finds_support(monkeypatch):
    """The child imports its function by name: the tests' support module must be on its path."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))


def test_the_answer_comes_back_whatever_the_child_prints():
    assert run_limited("support:child_echo", {"a": [1, "x"], "b": None}, LIMITS) == {"a": [1, "x"], "b": None}


@pytest.mark.parametrize(
    ("target", "kwargs", "limits", "error", "message"),
    [
        ("support:child_refuse", {"message": "Zip refused: bad."}, LIMITS, ChildRefused, "Zip refused: bad."),
        ("support:child_allocate", {"gib": 8}, LIMITS, ChildFailed, "ran out of memory (the limit is 2 GB)"),
        ("support:child_spin", {}, Limits(2 * 1024**3, cpu_s=2, wall_s=60), ChildFailed, "more than its 2 s of CPU"),
        ("support:child_sleep", {"seconds": 60}, Limits(2 * 1024**3, 30, wall_s=2), ChildFailed, "longer than 2 s"),
        ("support:child_crash", {}, LIMITS, ChildFailed, "crashed (SIGSEGV)"),
        ("support:child_bug", {}, LIMITS, ChildFailed, "failed (KeyError)"),
    ],
    ids=["refused", "memory", "cpu", "wall", "crash", "bug"],
)
def test_every_end_of_a_child_is_one_clear_error(target, kwargs, limits, error, message):
    with pytest.raises(error) as raised:
        run_limited(target, kwargs, limits)
    assert type(raised.value) is error and message in str(raised.value)


def test_a_timeout_also_ends_what_the_child_started(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    with pytest.raises(ChildFailed, match="longer than 3 s"):
        run_limited("support:child_sleep", {"seconds": 60, "pid_file": str(pid_file)}, Limits(2 * 1024**3, 30, 3))
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{grandchild}").exists() and "Z" not in _state(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in _state(grandchild)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
