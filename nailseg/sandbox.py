"""A visitor's heavy parsing in a child process with limits: a crash costs one answer, not the server.

C libraries fed hostile data can allocate without bound or crash (pycocotools given a NaN
polygon asked for ~20 GB; capped, it segfaulted). Run in the server's process, that takes the
whole server down. :func:`run_limited` runs one function in a fresh Python process instead (not a
fork: the server has threads) with

* an address-space limit (``RLIMIT_AS``): a runaway allocation fails there, not in the server;
* a CPU-time limit (``RLIMIT_CPU``) and a lower priority, so other visitors' requests go first;
* a wall-clock timeout, after which its whole process group is killed.

The request goes to the child on its stdin as JSON; the answer comes back on a private copy of its
stdout, while whatever the libraries print goes to stderr (the server's log). A ``ValueError``
raised by the function is the data's fault: its message comes back for the visitor
(:class:`ChildRefused`); anything else that stops the child is a :class:`ChildFailed` whose message
says, in a visitor's words, what happened. Nothing the child prints reaches a visitor.

Run as ``python -m nailseg.sandbox`` only by :func:`run_limited`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import resource
import signal
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

# Libraries start a thread (and reserve memory) per core unless told otherwise: one is enough here,
# and the limits stay meaningful on a machine with many cores.
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


@dataclass(frozen=True)
class Limits:
    """What one child may take: address space in bytes, CPU seconds, wall-clock seconds, niceness."""

    memory_bytes: int
    cpu_s: float
    wall_s: float
    nice: int = 10


class ChildRefused(ValueError):
    """The function refused its input (a ``ValueError`` in the child); the message is its own."""


class ChildFailed(RuntimeError):
    """The child was stopped or crashed; the message says which (``"ran out of memory (…)"``)."""


def run_limited(target: str, kwargs: dict, limits: Limits):
    """Call ``target`` (``"package.module:function"``) with ``kwargs`` in a child process within ``limits``.

    ``kwargs`` and the function's result must be JSON.

    Raises:
        ChildRefused: the function raised a ``ValueError``.
        ChildFailed: the child ran out of memory or CPU time, took too long, or crashed.
    """
    request = json.dumps({"target": target, "kwargs": kwargs, "limits": asdict(limits)}).encode()
    child = subprocess.Popen(
        [sys.executable, "-m", "nailseg.sandbox"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_child_env(),
        start_new_session=True,  # its own process group: a timeout kills whatever it started too
    )
    try:
        output, _ = child.communicate(request, timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
        _kill_group(child.pid)
        child.communicate()
        raise ChildFailed(f"took longer than {limits.wall_s:.0f} s and was stopped") from None
    finally:
        _kill_group(child.pid)  # anything it left running
    answer = _answer(output)
    if child.returncode == 0 and "result" in answer:
        return answer["result"]
    if "refused" in answer:
        raise ChildRefused(answer["refused"])
    raise ChildFailed(_why(child.returncode, answer.get("failed"), limits))


def _child_env() -> dict[str, str]:
    """The server's environment, with this ``nailseg`` first on the path and one thread per library."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **_ONE_THREAD, "PYTHONPATH": path}


def _kill_group(pid: int) -> None:
    # The group's id stays taken while any member lives, so this never reaches a stranger's group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _answer(output: bytes) -> dict:
    try:
        answer = json.loads(output)
    except ValueError:  # nothing written: the child died first
        return {}
    return answer if isinstance(answer, dict) else {}


def _why(returncode: int, failed: str | None, limits: Limits) -> str:
    """What stopped the child, for a visitor."""
    if failed == "MemoryError":
        return f"ran out of memory (the limit is {limits.memory_bytes / 1024**3:g} GB) and was stopped"
    if returncode == -signal.SIGXCPU:
        return f"used more than its {limits.cpu_s:.0f} s of CPU time and was stopped"
    if returncode == -signal.SIGKILL:  # the hard CPU limit, or the system short of memory
        return "was killed (out of CPU time or memory)"
    if returncode < 0:
        return f"crashed ({signal.Signals(-returncode).name})"
    return f"failed ({failed or f'exit code {returncode}'})"


def _limit(limits: Limits) -> None:
    """Apply ``limits`` to this process (and whatever it starts)."""
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    cpu = max(1, round(limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU first, SIGKILL 5 s later
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file of a visitor's data
    os.nice(limits.nice)


def _main() -> None:
    """The child: read the request, set the limits, call the function, write the answer."""
    answer_file = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the libraries print goes to the log, never into the answer
    request = json.load(sys.stdin)
    module, name = request["target"].split(":")
    function = getattr(importlib.import_module(module), name)  # imported before the memory limit
    _limit(Limits(**request["limits"]))
    try:
        answer = {"result": function(**request["kwargs"])}
    except MemoryError:
        answer = {"failed": "MemoryError"}
    except ValueError as err:
        answer = {"refused": str(err)}
    except Exception as err:  # noqa: BLE001 - any other error is the child's answer, logged in full here
        traceback.print_exc()
        answer = {"failed": type(err).__name__}
    json.dump(answer, answer_file)
    answer_file.close()


if __name__ == "__main__":
    _main()
