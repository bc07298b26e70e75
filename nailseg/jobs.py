"""Training jobs for the app: one ``nailseg train`` at a time, in its own process group.

The job is recorded in a JSON state file at the root of the work dirs (pid, arguments, work dir,
log), so a reloaded page, or a restarted app, finds the running training again. The child's exit
status is written by the small shell wrapper that starts it, so it is known even when the app that
started it is gone. ``status()`` only reads files (the log tail, mmengine's ``scalars.json``): it is
cheap enough to poll every two seconds.

The parsers (``parse_progress``, ``parse_eta``, ``parse_scalars``...) are pure functions of text.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nailseg.files import remove_older_than, write_atomic
from nailseg.paths import keep_hours, work_root

STATE_NAME = "train_job.json"
LOG_NAME = "train.log"
EXIT_NAME = "exit_code"
METRIC_KEYS = ("coco/bbox_mAP", "coco/bbox_mAP_50", "coco/segm_mAP", "coco/segm_mAP_50")

# mmengine's console lines: "Iter(train) [  10/1800]  lr: ...  eta: 1:13:20 ..." (iteration loops)
# and "Epoch(train)  [2][ 10/847]  ..." (epoch loops).
_ITER_RE = re.compile(r"Iter\(train\)\s*\[\s*(\d+)/(\d+)\]")
_EPOCH_RE = re.compile(r"Epoch\(train\)\s*\[\s*(\d+)\]\s*\[\s*(\d+)/(\d+)\]")
_ETA_RE = re.compile(r"\beta: ((?:(\d+) days?, )?(\d+):(\d{2}):(\d{2}))")
_LOOP_RE = re.compile(r"^train_cfg = dict\((.*)\)\s*$", re.MULTILINE)


class JobError(RuntimeError):
    """A training job cannot be started or controlled; the message says why."""


@dataclass(frozen=True)
class TrainRequest:
    """What the Train tab asks for; ``argv()`` turns it into a ``nailseg train`` command line."""

    data: str
    work_dir: str
    config: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    cfg_options: tuple[str, ...] = ()
    load_from: str | None = None
    nproc: int | None = None  # processes (GPUs) through torchrun; None or 1: one process

    def argv(self, python: str = sys.executable) -> list[str]:
        args = [python, "-m", "nailseg", "train"]
        if self.config:
            args.append(str(self.config))
        args += ["--data", str(self.data), "--work-dir", str(self.work_dir)]
        if self.epochs:
            args += ["--epochs", str(int(self.epochs))]
        if self.batch_size:
            args += ["--batch-size", str(int(self.batch_size))]
        if self.lr:
            args += ["--lr", repr(float(self.lr))]
        if self.load_from:
            args += ["--load-from", str(self.load_from)]
        if self.nproc and self.nproc > 1:
            args += ["--nproc", str(int(self.nproc))]
        if self.cfg_options:
            args += ["--cfg-options", *self.cfg_options]
        return args


@dataclass
class JobStatus:
    """What the Train tab shows. ``state`` is idle, running, finished, failed or stopped.

    ``iter``/``max_iters`` count training iterations over the whole run (epoch loops included);
    ``eta_s`` is mmengine's estimate at its last log line, in seconds; ``losses`` is
    ``[(iter, loss)]`` from ``scalars.json``; ``metrics`` the last validation (COCO AP, 0-1).
    """

    state: str = "idle"
    work_dir: str | None = None
    argv: list[str] = field(default_factory=list)
    pid: int | None = None
    started: float | None = None
    returncode: int | None = None
    iter: int = 0
    max_iters: int | None = None
    eta_s: float | None = None
    log_tail: list[str] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def fraction(self) -> float:
        """Share of the run done, 0-1 (0 while the first log line is awaited)."""
        return min(1.0, self.iter / self.max_iters) if self.max_iters else 0.0


# --- pure parsers -----------------------------------------------------------------------------


def parse_eta(line: str) -> float | None:
    """Seconds in mmengine's ``eta: [N day(s), ]H:MM:SS`` field of a log line, or None."""
    m = _ETA_RE.search(line)
    if not m:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups()[1:])
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def parse_progress(log_text: str, max_epochs: int | None = None) -> tuple[int, int | None, float | None]:
    """``(iter, max_iters, eta_s)`` from the last training line of an mmengine log.

    Epoch loops log ``[epoch][i/n]``; their total is ``max_epochs * n`` when ``max_epochs`` is
    known, else None. ``(0, None, None)`` when no training line was logged yet.
    """
    for line in reversed(log_text.splitlines()):
        if m := _ITER_RE.search(line):
            return int(m[1]), int(m[2]), parse_eta(line)
        if m := _EPOCH_RE.search(line):
            epoch, i, n = int(m[1]), int(m[2]), int(m[3])
            return (epoch - 1) * n + i, (max_epochs * n if max_epochs else None), parse_eta(line)
    return 0, None, None


def parse_loop(config_text: str) -> tuple[int | None, int | None]:
    """``(max_iters, max_epochs)`` of the top-level ``train_cfg`` in a dumped mmengine config."""
    m = _LOOP_RE.search(config_text)
    if not m:
        return None, None
    found = [re.search(rf"\b{key}=(\d+)", m[1]) for key in ("max_iters", "max_epochs")]
    return tuple(int(f[1]) if f else None for f in found)  # type: ignore[return-value]


def parse_records(text: str) -> list[dict]:
    """The records of ``scalars.json`` text, one JSON object per line; lines that do not parse (a
    line being written) are skipped."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def parse_scalars(text: str) -> tuple[list[tuple[int, float]], dict[str, float]]:
    """Loss history ``[(iter, loss)]`` and the last validation metrics from ``scalars.json`` text.

    Validation records carry ``coco/*`` keys and the iteration they were taken at.
    """
    losses: dict[int, float] = {}
    metrics: dict[str, float] = {}
    for record in parse_records(text):
        if "loss" in record and "iter" in record:
            losses[int(record["iter"])] = float(record["loss"])
        if any(k in record for k in METRIC_KEYS):
            metrics = {k: float(record[k]) for k in METRIC_KEYS if k in record}
    return sorted(losses.items()), metrics


def tail_lines(text: str, n: int) -> list[str]:
    """The last ``n`` non-empty lines, with mmengine's carriage-return progress bars collapsed."""
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
    return [line for line in lines if line][-n:] if n > 0 else []


# --- files of a run ---------------------------------------------------------------------------


def _read_tail(path: Path, max_bytes: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def newest_checkpoint(work_dir: str | Path) -> Path | None:
    """The checkpoint mmengine names in ``last_checkpoint``, else the newest ``*.pth``."""
    work_dir = Path(work_dir)
    last = work_dir / "last_checkpoint"
    if last.is_file():
        path = Path(last.read_text().strip())
        if path.is_file():
            return path
    pths = sorted(work_dir.glob("*.pth"), key=lambda p: p.stat().st_mtime)
    return pths[-1] if pths else None


def scalars_text(work_dir: str | Path) -> str:
    """mmengine's ``scalars.json`` of every run in ``work_dir``, oldest first (each start, a resumed
    one too, adds a ``<timestamp>/vis_data/`` folder)."""
    files = sorted(Path(work_dir).glob("*/vis_data/scalars.json"))
    return "\n".join(p.read_text(errors="replace") for p in files)


def read_run(work_dir: str | Path, log_lines: int = 30) -> dict:
    """Progress, log tail, losses, metrics and checkpoint of a (running or ended) run's work dir."""
    work_dir = Path(work_dir)
    log_text = _read_tail(work_dir / LOG_NAME)
    max_epochs = None
    for cfg in work_dir.glob("*.py"):  # mmengine dumps the full config here at start
        max_epochs = parse_loop(cfg.read_text(errors="replace"))[1]
    it, max_iters, eta = parse_progress(log_text, max_epochs)
    losses, metrics = parse_scalars(scalars_text(work_dir))
    ckpt = newest_checkpoint(work_dir)
    return dict(
        iter=it,
        max_iters=max_iters,
        eta_s=eta,
        log_tail=tail_lines(log_text, log_lines),
        losses=losses,
        metrics=metrics,
        checkpoint=str(ckpt) if ckpt else None,
    )


# --- process control --------------------------------------------------------------------------


def _alive(pid: int, check_cmdline: bool = True) -> bool:
    """True while the job ``pid`` runs; a zombie (ended, not yet reaped) counts as ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    # After a reboot the recorded pid may belong to another program. (Between fork and exec the
    # child still shows the parent's command line, hence the switch.)
    zombie = stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]
    return not zombie and (b"nailseg" in cmdline or not check_cmdline)


def _processes() -> list[tuple[int, int, int, str]]:
    """``(pid, parent pid, process group, state)`` of every process, from ``/proc``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            found.append((int(stat.parent.name), int(fields[1]), int(fields[2]), fields[0]))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _descendant_groups(pid: int) -> set[int]:
    """Process groups of ``pid``'s descendants (its children, theirs...)."""
    procs = _processes()
    family, groups = {pid}, set()
    while True:
        new = {(p, g) for p, parent, g, _ in procs if parent in family and p not in family}
        if not new:
            return groups
        family |= {p for p, _ in new}
        groups |= {g for _, g in new}


class TrainingJobs:
    """Starts, watches and stops the one training of a work-dirs root.

    Any number of instances (one per app process) may point at the same root: the state file is
    the single truth, and a start takes an exclusive lock on it.
    """

    def __init__(self, root: str | Path | None = None, niceness: int = 10):
        """``root``: default :func:`nailseg.paths.work_root`; ``niceness``: the training's ``nice``
        increment, so that it yields the CPU to the app."""
        self.root = Path(root) if root else work_root()
        self.niceness = niceness
        self.state_file = self.root / STATE_NAME
        self._children: dict[int, subprocess.Popen] = {}  # reaped by status() so none stays a zombie

    def _read_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def _write_state(self, state: dict) -> None:
        write_atomic(self.state_file, json.dumps(state, indent=2))

    def new_work_dir(self, config: str | Path | None) -> Path:
        """A fresh ``<root>/ui/<timestamp>_<config stem>`` for one run of the Train tab."""
        stem = Path(config).stem if config else "default"
        return self.root / "ui" / f"{dt.datetime.now():%Y%m%d_%H%M%S}_{stem}"

    def runs(self) -> list[Path]:
        """Work dirs of the app's earlier runs, newest first."""
        ui = self.root / "ui"
        return sorted((p for p in ui.iterdir() if p.is_dir()), reverse=True) if ui.is_dir() else []

    def start(self, request: TrainRequest) -> JobStatus:
        """Start ``nailseg train`` in a new session; raises JobError while another job runs.

        Runs of the app older than :func:`nailseg.paths.keep_hours` are removed first.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / (STATE_NAME + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.status().running:
                raise JobError("a training is already running; stop it first")
            remove_older_than(self.root / "ui", keep_hours())
            work_dir = Path(request.work_dir)
            work_dir.mkdir(parents=True, exist_ok=True)
            (work_dir / EXIT_NAME).unlink(missing_ok=True)
            argv = request.argv()
            # The wrapper records the exit status even when the app that started it has gone.
            command = shlex.join(["nice", "-n", str(self.niceness), *argv] if self.niceness > 0 else argv)
            script = f"{command}; rc=$?; echo $rc > {shlex.quote(str(work_dir / EXIT_NAME))}; exit $rc"
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            with open(work_dir / LOG_NAME, "ab") as log:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", script],
                    cwd=self.root,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: stop() kills it and its workers
                    env=env,
                )
            self._children[proc.pid] = proc
            self._write_state(
                dict(pid=proc.pid, argv=argv, work_dir=str(work_dir), started=time.time(), stop_requested=False)
            )
        return self.status()

    def status(self, log_lines: int = 30) -> JobStatus:
        """The current (or last) job, read from its files; ``state="idle"`` when there was none."""
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]
        state = self._read_state()
        if not state:
            return JobStatus()
        work_dir = Path(state["work_dir"])
        returncode = None
        exit_file = work_dir / EXIT_NAME
        if exit_file.is_file():
            try:
                returncode = int(exit_file.read_text().strip())
            except ValueError:
                returncode = None
        just_started = time.time() - state.get("started", 0) < 10
        if returncode is None and _alive(state["pid"], check_cmdline=not just_started):
            phase = "running"
        elif state.get("stop_requested"):
            phase = "stopped"
        else:
            phase = "finished" if returncode == 0 else "failed"
        run = read_run(work_dir, log_lines)
        if phase == "finished" and run["max_iters"]:
            run["iter"] = run["max_iters"]
        if phase == "running" and run["eta_s"] is not None:  # the estimate was made at the last log line
            with contextlib.suppress(OSError):
                run["eta_s"] = max(0.0, run["eta_s"] - (time.time() - (work_dir / LOG_NAME).stat().st_mtime))
        return JobStatus(
            state=phase,
            work_dir=str(work_dir),
            argv=state["argv"],
            pid=state["pid"],
            started=state.get("started"),
            returncode=returncode,
            **run,
        )

    def stop(self, timeout: float = 15.0) -> JobStatus:
        """SIGTERM the job's process group, SIGKILL it after ``timeout`` seconds; a no-op when idle."""
        state = self._read_state()
        if not state or not self.status().running:
            return self.status()
        state["stop_requested"] = True
        self._write_state(state)
        # start_new_session: the wrapper leads its own group. torchrun (--nproc) starts each worker
        # in a session of its own: their groups are found now, while they are still our descendants.
        groups = {state["pid"], *_descendant_groups(state["pid"])}
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(map(self._group_alive, groups)):
                self.status()  # reaps our own child
                time.sleep(0.2)
            if not any(map(self._group_alive, groups)):
                break
        return self.status()

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        # Only zombies may be left: check each member of the group.
        return any(group == pgid and state != "Z" for _, _, group, state in _processes())
