"""Let training reuse freed tensor memory instead of asking the kernel for fresh pages.

glibc serves every allocation above its mmap threshold (dynamic, at most 32 MiB) with new
pages that the kernel zeroes on first touch and unmaps on free. A training step that makes and
frees activations of tens of MiB (a stacked grid's ``[cells, batch, frames, dim]`` tensors, a
FAN relation layer's ``[batch, frames, 2 x 512]`` pairs) then spends much of its time in the
kernel (a stacked transformer group of the grid bench: 9.3 s of its 22 s were system time).
Raising the mmap and trim thresholds to 1 GiB keeps such blocks in the heap for the next step:
1.16x / 1.35x per FAN-self / FAN-relation training step (``python -m avemo.bench --only
layers``, heap columns). The cost is that a process keeps up to
its peak heap until it exits, which training processes do anyway.

Linux/glibc only (elsewhere a no-op); ``AVEMO_MALLOC=system`` keeps the C library's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from avemo import settings

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30
_done: bool | None = None


def tune_allocator() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; True when they are raised."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if settings.current().malloc == "system" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to tune
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, THRESHOLD)
    )
    return _done


__all__ = ["THRESHOLD", "tune_allocator"]
