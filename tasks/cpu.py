"""A process-wide gate on the CPU-heavy stages (post-processing, gates).

A catalog keeps many assets in progress so that providers' rate limits stay busy
(`BRANDFORGE_MAX_PARALLEL`, 16 by default); most of them are waiting on a job.
The stages that work on pixels, though, gain nothing from more threads than
cores and each holds a few full-size images: without this gate, 16 assets in
post-processing at once took the catalog process from 0.4 to 2.1 GB.
"""

from __future__ import annotations

import ctypes
import os
import threading

CPU_SLOTS = int(os.environ.get("BRANDFORGE_CPU_SLOTS", str(os.cpu_count() or 2)))
cpu_slot = threading.BoundedSemaphore(max(1, CPU_SLOTS))


# glibc's malloc gives each thread that allocates its own arena (up to 8 per core) and raises its
# mmap threshold as big blocks are freed, so decoded images end up in arenas that never shrink:
# `bench/catalog.py -n 40` peaked at 1061 MB. Two arenas and a fixed 1 MiB mmap threshold (every
# image buffer mmapped, hence returned on free) gave 560 MB for the same run, at the same speed
# within noise. Set here because every process that does pixel work imports this module;
# MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ in the environment win; BRANDFORGE_BOUND_HEAP=0 turns it off.
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8


def bound_heap(arenas: int = 2, mmap_threshold: int = 1 << 20) -> bool:
    """Apply the malloc settings above (glibc only); True when they were applied."""
    if os.environ.get("BRANDFORGE_BOUND_HEAP", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return False
    applied = False
    if "MALLOC_ARENA_MAX" not in os.environ:
        applied = bool(libc.mallopt(_M_ARENA_MAX, arenas))
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) or applied
    return applied


bound_heap()
