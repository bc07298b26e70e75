"""What the app shares between requests: the model in use, and scratch folders for answers.

The model is loaded once (lazily, under a lock) and can be switched at run time, e.g. by the
Train tab's "use this model". Scratch folders hold the files handed to Gradio (zips), which
copies them into its own cache; ours are removed a little later and at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from pathlib import Path

from nailseg.weights import BUNDLED_WEIGHTS, HubUnreachable, WeightsError

SCRATCH_ROOT = Path(tempfile.mkdtemp(prefix="nailseg-app-"))
atexit.register(shutil.rmtree, SCRATCH_ROOT, ignore_errors=True)
# Gradio copies an answer's files into its cache as soon as the handler returns; a minute is ample.
SCRATCH_KEEP_S = 60.0


class ModelStore:
    """The model every request uses; loaded on first use, switchable, thread-safe.

    Attributes:
        notice: what the UI should say about the weights (empty when nothing is unusual),
            e.g. that the Hub was unreachable and the bundled model is used instead.
    """

    def __init__(self, spec: str | None = None) -> None:
        self._spec = spec  # None: $NAILSEG_WEIGHTS, then the bundled model (see nailseg.weights)
        self._model = None
        self._lock = threading.Lock()
        self.notice = ""

    @property
    def current(self):
        """The :class:`~nailseg.inference.NailSegmenter` in use (loads it on first access)."""
        model = self._model
        if model is None:
            with self._lock:
                if self._model is None:
                    self._model, self.notice = _load_with_fallback(self._spec)
                model = self._model
        return model

    def switch(self, spec: str) -> str:
        """Load other weights (local path or ``hf://owner/repo[@rev]/file``) and use them from now on.

        Returns:
            A one-line message for the UI: the weights now in use, and the notice if any.

        Raises:
            WeightsError: the weights cannot be found or loaded; the model in use is kept.
        """
        spec = spec.strip()
        if not spec:
            raise WeightsError("give a local weights path or hf://owner/repo[@revision]/file.safetensors")
        model, notice = _load_with_fallback(spec)
        with self._lock:
            self._spec, self._model, self.notice = spec, model, notice
        return describe(model, notice)


def _load_with_fallback(spec: str | None):
    """Load ``spec``; when the Hub is unreachable, the bundled model and a notice instead."""
    from nailseg.inference import load_model

    try:
        return load_model(spec), ""
    except HubUnreachable as err:
        if not BUNDLED_WEIGHTS.is_file():
            raise WeightsError(f"{err}, and the bundled model {BUNDLED_WEIGHTS.name} is missing") from err
        return load_model(BUNDLED_WEIGHTS), f"Hub unreachable ({err}): using the bundled model"


def describe(model, notice: str = "") -> str:
    """``weights: <source> (loaded in 1.2 s on cpu)`` plus the notice, for the UI."""
    text = f"weights: `{model.weights.source}` (loaded in {model.load_seconds:.1f} s on {model.device})"
    return f"{text}. **{notice}**" if notice else text


def scratch_dir() -> Path:
    """A fresh folder for one answer's files; folders of earlier answers older than a minute go."""
    now = time.time()
    for old in SCRATCH_ROOT.iterdir():
        try:
            if now - old.stat().st_mtime > SCRATCH_KEEP_S:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another request removed it first
            pass
    return Path(tempfile.mkdtemp(dir=SCRATCH_ROOT))


STORE = ModelStore()
