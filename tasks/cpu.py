"""A process-wide gate on the CPU-heavy stages (post-processing, gates).

A catalog keeps many assets in progress so that providers' rate limits stay busy
(`BRANDFORGE_MAX_PARALLEL`, 16 by default); most of them are waiting on a job.
The stages that work on pixels, though, gain nothing from more threads than
cores and each holds a few full-size images: without this gate, 16 assets in
post-processing at once took the catalog process from 0.4 to 2.1 GB.
"""

from __future__ import annotations

import os
import threading

CPU_SLOTS = int(os.environ.get("BRANDFORGE_CPU_SLOTS", str(os.cpu_count() or 2)))
cpu_slot = threading.BoundedSemaphore(max(1, CPU_SLOTS))
