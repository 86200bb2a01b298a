"""A process-wide gate on the CPU-heavy stages (post-processing, gates).

A catalog keeps many assets in progress so that providers' rate limits stay busy
(`BRANDFORGE_MAX_PARALLEL`, 24 by default); most of them are waiting on a job.
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


# glibc's malloc gives each thread that allocates its own arena (up to 8 per core), and freed
# image buffers stay in whichever arena held them: `bench/catalog.py -n 40 --only prefect` peaked
# at 873–1061 MB. Two arenas: 628 MB in the same time, side by side (147.4 s against 147.9 s).
# A fixed 1 MiB mmap threshold as well gave 543–560 MB but took 9–22 % longer, so it is not set.
# Set here because every process that does pixel work imports this module; MALLOC_ARENA_MAX in
# the environment wins, BRANDFORGE_BOUND_HEAP=0 turns it off.
_M_ARENA_MAX = -8


def bound_heap(arenas: int = 2) -> bool:
    """Cap malloc's arenas as above (glibc only); True when applied."""
    if os.environ.get("BRANDFORGE_BOUND_HEAP", "1") == "0" or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


bound_heap()
