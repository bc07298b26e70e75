"""NailSeg: one mask and one box per fingernail."""

__version__ = "0.1.0"
