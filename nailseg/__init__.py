"""NailSeg: one mask and one box per fingernail.

    from nailseg import load_model
    nails = load_model().predict(photo_rgb)  # Nails: boxes_xyxy, masks, scores

``load_model`` and ``Nails`` are imported on first use (PEP 562): ``import nailseg`` and the CLI's
``--help`` do not load torch and mmdet.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Nails", "NailSegmenter", "load_model"]

_EXPORTS = {"load_model": "nailseg.inference", "NailSegmenter": "nailseg.inference", "Nails": "nailseg.result"}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nailseg' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
