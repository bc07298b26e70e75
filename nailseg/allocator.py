"""Keep freed memory for reuse: glibc's malloc settings for a process that runs the model.

torch's CPU tensors come from ``malloc``. glibc serves every request over its mmap threshold (128
KiB at start) with fresh pages from the kernel and gives them back on free, so each large
activation of each photo is zero-filled by a page fault per 4 KiB when it is first written. On a
virtual machine a page fault is expensive: on this project's 2-core machine a fresh 16 MiB buffer
took 63 ms to fill against 5 ms for the same buffer reused. Raising the mmap threshold to its
maximum (32 MiB) and the trim threshold keeps freed memory in the heap, and the next photo's
tensors reuse it. The cost is that the process keeps its peak heap (it was going to reach it again
with the next photo anyway).

``NAILSEG_MALLOC=default`` leaves glibc's own settings. Other C libraries (musl, macOS) are left
alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Apply the settings above to this process's glibc malloc; True where they were applied."""
    if os.environ.get("NAILSEG_MALLOC", "").strip().lower() == "default":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
