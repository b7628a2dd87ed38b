"""The C allocator of a process that scores on the CPU: keep the memory a batch frees for the next batch.

glibc serves each allocation above its mmap threshold (dynamic, at most 32 MiB) with a fresh mapping and unmaps
it on free, and gives the heap's free top back to the OS above 128 KiB. A forward of 32 images at 224 px through
MobileNetV2 allocates and frees activations of up to 51 MB per layer, so every batch zero-fills new pages through
page faults: on the 2-core machine, PyTorch eager spent about two thirds of its forward there (docs/critic.md has
the measurement). Serving those buffers from the heap and not trimming it keeps their pages mapped between
batches. The process's peak RSS does not grow (the same buffers are reused); memory it frees stays with it until
it exits, which suits a process that scores batch after batch.
"""

from __future__ import annotations

import ctypes
import functools

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # mallopt takes an int


@functools.cache
def keep_freed_memory() -> bool:
    """Set once per process; False where the C library has no glibc mallopt (nothing is changed there)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
