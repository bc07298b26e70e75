"""What the app shares between requests: the model, visitors' results, scratch folders, uploads.

* ``Shared``, made once per app by its builder and handed to the tabs: the model in use
  (``ModelStore``: loaded in the background at start, the page answers first, and switchable at
  run time by the owner), each visitor's last segmented photo (``SessionStore``: kept at working
  size for redraws, bounded in bytes per photo, per client address and in total, and in time; no
  address evicts another's) and the training run (``TrainingJobs``).
* Scratch folders hold the files handed to Gradio (zips), which copies them into its own cache;
  ours go a minute later, at exit and on SIGTERM, and those of a process that died are removed
  at the next start.
* ``Upload``: a visitor's file, by its server path and the name the visitor gave it; messages
  name files by the latter. Uploads are Gradio's files: the app never deletes them (Gradio's
  ``delete_cache`` does, after a few minutes), so two visitors sending the same bytes, which
  Gradio stores under one path, never take each other's file away.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import gradio as gr

from nailseg.jobs import TrainingJobs
from nailseg.weights import (
    BUNDLED_WEIGHTS,
    FALLBACK_SCORE_THR,
    HubUnreachable,
    ModelSettings,
    WeightsError,
    weights_spec,
)

_SCRATCH_PREFIX = "nailseg-app-"
SCRATCH_KEEP_S = 60.0  # Gradio copies an answer's files into its cache as soon as the handler returns


def _remove_dead_scratch(tmp: Path) -> None:
    """Scratch roots of app processes that no longer run (killed, crashed) are removed."""
    for old in tmp.glob(f"{_SCRATCH_PREFIX}*-*"):
        pid = old.name.removeprefix(_SCRATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)


_scratch_root: Path | None = None
_scratch_lock = threading.Lock()


def scratch_root() -> Path:
    """This process's folder of answers' files, made at the first answer (importing this module
    makes nothing): dead processes' roots are removed then, and this one at exit."""
    global _scratch_root
    with _scratch_lock:
        if _scratch_root is None or not _scratch_root.is_dir():
            _remove_dead_scratch(Path(tempfile.gettempdir()))
            _scratch_root = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-"))
            atexit.register(shutil.rmtree, _scratch_root, ignore_errors=True)
        return _scratch_root


def exit_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit, so that atexit handlers remove the scratch folders."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def scratch_dir() -> Path:
    """A fresh folder for one answer's files; folders of earlier answers older than a minute go."""
    now, root = time.time(), scratch_root()
    for old in root.iterdir():
        try:
            if now - old.stat().st_mtime > SCRATCH_KEEP_S:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another request removed it first
            pass
    return Path(tempfile.mkdtemp(dir=root))


@dataclass(frozen=True)
class Upload:
    """A visitor's file: where Gradio stored it, and the name the visitor gave it.

    Made only by :meth:`received`, which checks that Gradio itself received the file.
    """

    path: str
    name: str

    @classmethod
    def received(cls, path: str | None, name: str | None = None) -> Upload:
        """The file at ``path`` if Gradio received it for this server, else a refusal.

        A request names its files by path. Gradio checks that path only in payloads marked as its
        own (``meta: {"_type": "gradio.FileData"}``), and a component may open whatever else it is
        given; so every file input checks again here, whatever the payload said. Accepted: a
        regular file inside Gradio's upload folder, symlinks resolved. A path outside it is refused
        before the file system is asked anything, and every refusal reads the same, so an answer
        never tells what exists at a path.

        Raises:
            gr.Error: the path is not a file Gradio received (or it was deleted since).
        """
        path = path if isinstance(path, str) else ""
        name = name if isinstance(name, str) and name else Path(path).name or "the file"
        if path and _inside_upload_folder(path) and os.path.isfile(os.path.realpath(path)):
            return cls(os.path.realpath(path), name)
        raise gr.Error(f"Cannot use {code(name)}: it is not a file uploaded to this server (or not any more).")


def upload_folder() -> Path:
    """Where Gradio keeps what this server received: uploads, webcam pictures, answers' files."""
    return Path(gr.utils.get_upload_folder()).resolve()


def _inside_upload_folder(path: str) -> bool:
    """``path`` lies in :func:`upload_folder`: first as written (no file system access), then with links resolved."""
    root = upload_folder()
    return Path(os.path.abspath(path)).is_relative_to(root) and Path(os.path.realpath(path)).is_relative_to(root)


def uploaded_file(payload) -> Upload:
    """The file of one of Gradio's file payloads (``{"path": ..., "orig_name": ...}``), checked by
    :meth:`Upload.received`; anything else is refused the same way.

    The app's events that take a visitor's input run with ``preprocess=False`` and check the raw
    payload here: a component's own preprocessing may open the path first (``gr.Image`` does),
    and an override of it does not last, since an event that updates a component (loading an
    example does) replaces it in the visitor's session by a plain one.
    """
    payload = payload if isinstance(payload, dict) else {}
    return Upload.received(payload.get("path"), payload.get("orig_name"))


class ModelStore:
    """The model every request uses: loaded once (in the background if asked), switchable, thread-safe.

    Attributes:
        notice: what the UI should say about the weights (empty when nothing is unusual),
            e.g. that the Hub was unreachable and the bundled model is used instead.
    """

    def __init__(self, spec: str | None = None) -> None:
        self._spec = spec  # None: $NAILSEG_WEIGHTS, then the bundled model (see nailseg.weights)
        self._model = None
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self.notice = ""

    def load_in_background(self) -> None:
        """Start loading now, in a thread; requests that need the model wait for it."""
        threading.Thread(target=self._load, name="nailseg-model-load", daemon=True).start()

    def _load(self) -> None:
        with self._lock:
            if self._model is None:
                try:
                    self._model, self.notice = _load_with_fallback(self._spec)
                    self._error = None
                except WeightsError as err:
                    self._error = err

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def current(self):
        """The :class:`~nailseg.inference.NailSegmenter` in use (waits for, or does, the first load).

        Raises:
            WeightsError: the configured weights cannot be loaded.
        """
        if self._model is None:
            self._load()
        if self._model is None:
            raise WeightsError(f"the model could not be loaded: {self._error}")
        return self._model

    def switch(self, spec: str) -> str:
        """Load other weights (``.safetensors`` with its ``.json``, local or ``hf://``) for every later request.

        Returns:
            A one-line Markdown message for the UI: the weights now in use, and the notice if any.

        Raises:
            WeightsError: the weights cannot be found or loaded; the model in use is kept.
        """
        spec = spec.strip()
        if not spec:
            raise WeightsError("give a local weights path or hf://owner/repo[@revision]/file.safetensors")
        model, notice = _load_with_fallback(spec)
        with self._lock:
            self._spec, self._model, self.notice, self._error = spec, model, notice, None
        return describe(model, notice)

    def score_thr(self) -> float:
        """The default score threshold of the model in use (the Segment tab's slider at page load).

        Never waits: before the first load has finished, it is read from the configured local
        weights' ``.json`` config; weights on the Hub, or a config that cannot be read, give the
        fallback until the model is loaded (loading then reports any error).
        """
        if self._model is not None:
            return self._model.score_thr
        spec = weights_spec(self._spec)
        if spec.startswith("hf://"):
            return FALLBACK_SCORE_THR
        try:
            return ModelSettings.read(Path(spec).with_suffix(".json")).score_thr
        except WeightsError:
            return FALLBACK_SCORE_THR

    def status(self) -> str:
        """Markdown: the weights in use, or that they are still loading."""
        if self._model is None:
            return "weights: loading… (the first photo waits for them)" if self._error is None else f"**{self._error}**"
        return describe(self._model, self.notice)


def _load_with_fallback(spec: str | None):
    """Load ``spec``; when the Hub is unreachable, the bundled model and a notice instead.

    Raises:
        WeightsError: the weights cannot be loaded, their config included: a config of a shape
            the loader does not expect (``"type": {}``) fails there with a TypeError or the like.
    """
    from nailseg.inference import load_model

    try:
        return load_model(spec), ""
    except HubUnreachable:
        if not BUNDLED_WEIGHTS.is_file():
            raise WeightsError("the Hub is unreachable and the bundled model is missing") from None
        return load_model(BUNDLED_WEIGHTS), "Hub unreachable: using the bundled model"
    except (TypeError, KeyError, AttributeError, IndexError) as err:
        raise WeightsError(f"their config is not one this project reads ({type(err).__name__})") from err


def describe(model, notice: str = "") -> str:
    """``weights: <source> (loaded in 1.2 s on cpu, fp32; default score threshold 0.9)`` and the notice, Markdown."""
    name = code(weights_name(model.weights.source))
    text = (
        f"weights: {name} (loaded in {model.load_seconds:.1f} s on {model.device}, {model.precision}; "
        f"default score threshold {model.score_thr:g})"
    )
    return f"{text}. **{notice}**" if notice else text


def weights_name(source: str) -> str:
    """What visitors see of a weights source: an ``hf://`` spec as it is, a local file by its name."""
    return source if source.startswith("hf://") else Path(source).name


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def plain(text: str) -> str:
    """``text`` for Markdown, every character that would format it escaped (one line)."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text).split()))


def code(text: str) -> str:
    """``text`` as a Markdown code span that no character of it can break out of."""
    text = " ".join(str(text).split()).replace("`", "'")
    return f"`{text}`"


def number(value, label: str, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]``, else a clear error (NaN, infinities, text and booleans included)."""
    try:
        value = float("nan" if value is None or isinstance(value, bool) else value)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise gr.Error(f"{label} must be a number from {low:g} to {high:g}.")
    return value


class _Kept(NamedTuple):
    used: float  # time.monotonic() of the last use
    nbytes: int
    value: object
    client: str  # the client address that keeps it


class SessionStore:
    """Values kept per visitor (e.g. a segmented photo for redraws), bounded in bytes and time.

    The visitor's ``gr.State`` holds only the key. Fair shares: each client address keeps at
    most ``max_client_bytes`` in all its sessions, and making room for a value evicts only that
    address's own least recently used values, never another's. When the whole store
    (``max_total_bytes``) is full of others' values, a new one is not kept (the visitor segments
    again to redraw) until they expire, ``ttl_s`` seconds after their last use. A value larger
    than ``max_item_bytes`` is never kept.
    """

    def __init__(self, max_item_bytes: int, max_client_bytes: int, max_total_bytes: int, ttl_s: float) -> None:
        self.max_item_bytes, self.max_client_bytes = max_item_bytes, max_client_bytes
        self.max_total_bytes, self.ttl_s = max_total_bytes, ttl_s
        self._items: OrderedDict[str, _Kept] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def put(self, value: object, nbytes: int, key: str | None = None, client: str = "") -> str | None:
        """Keep ``value`` (``nbytes`` large) for ``client`` under ``key`` (a new one by default).

        Returns:
            The key, or None when the value is not kept (too large, or no room left by others).
        """
        with self._lock:
            if key is not None:
                self._items.pop(key, None)
            self._expire()
            if nbytes > self.max_item_bytes:
                return None
            self._make_room(client, nbytes)
            if not self._fits(client, nbytes):
                return None
            key = key or secrets.token_urlsafe(16)
            self._items[key] = _Kept(time.monotonic(), nbytes, value, client)
            return key

    def get(self, key: str | None):
        """The value under ``key``, or None when it expired, was evicted or never existed."""
        with self._lock:
            self._expire()
            if key is None or key not in self._items:
                return None
            kept = self._items.pop(key)
            self._items[key] = kept._replace(used=time.monotonic())
            return kept.value

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._bytes()

    def __len__(self) -> int:
        return len(self._items)

    def _bytes(self, client: str | None = None) -> int:
        return sum(k.nbytes for k in self._items.values() if client is None or k.client == client)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, kept in self._items.items() if now - kept.used > self.ttl_s]:
            del self._items[key]

    def _fits(self, client: str, nbytes: int) -> bool:
        """``nbytes`` more for ``client`` stay within its share and the store's bound."""
        return self._bytes(client) + nbytes <= self.max_client_bytes and self._bytes() + nbytes <= self.max_total_bytes

    def _make_room(self, client: str, nbytes: int) -> None:
        """Evict ``client``'s own least recently used values (only those) until ``nbytes`` more fit."""
        for key in [key for key, kept in self._items.items() if kept.client == client]:
            if self._fits(client, nbytes):
                return
            del self._items[key]


@dataclass
class Shared:
    """What every request of one app shares, made by the app's builder and handed to its tabs.

    Making one costs nothing: nothing loads and nothing starts until asked. Tests make their own.

    Attributes:
        store: the model in use.
        sessions: each visitor's last segmented photo. A working-size photo (<= 1600 px) and its
            nails take up to ~8 MB: 256 MB keep 30+ visitors, and an address with many sessions (a
            script, an office behind one address) keeps 64 MB of them.
        jobs: the Train tab's one training run.
    """

    store: ModelStore = field(default_factory=ModelStore)
    sessions: SessionStore = field(
        default_factory=lambda: SessionStore(
            max_item_bytes=32 * 1024**2, max_client_bytes=64 * 1024**2, max_total_bytes=256 * 1024**2, ttl_s=15 * 60
        )
    )
    jobs: TrainingJobs = field(default_factory=TrainingJobs)
