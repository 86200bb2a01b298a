"""A provider fake in its own process, for benchmarks that measure the product.

A real provider renders on its own machines. A fake served from a thread of the
benchmark's process renders on the catalog's cores *and* under its GIL: in
`bench/catalog_provider.py` it took about a third of the catalog process's CPU
samples (py-spy), so the figure measured the fake as much as the product. Here
the fake runs in a spawned process; the benchmark asks it for its counters and
job times at the end (CLOCK_MONOTONIC is one clock for every process).

    with RemoteFake("replicate:FakeReplicate", latency_s=5, rate_limit_rpm=120) as fake:
        ... fake.url ...
        stats, jobs = fake.report()   # {"429": .., "accepted": ..}, [(created, ready_at), ...]
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _serve(kind: str, knobs: dict[str, Any], conn: Any) -> None:
    sys.path.insert(0, str(ROOT))
    os.nice(5)  # the provider's work is not the product's: the catalog gets the cores first
    from tests.fakes.base import Knobs, serve

    module, _, name = kind.partition(":")
    fake = getattr(importlib.import_module(f"tests.fakes.{module}"), name)(Knobs(**knobs))
    with serve(fake):
        conn.send(fake.url)
        while (command := conn.recv()) != "stop":
            if command == "report":
                conn.send((dict(fake.stats), [(j.created, j.ready_at) for j in fake.jobs.values()]))


class RemoteFake:
    """The fake `kind` ("<module of tests.fakes>:<class>") with these `Knobs`, served by a child process."""

    def __init__(self, kind: str, **knobs: Any):
        self.kind, self.knobs = kind, knobs
        self.url = ""

    def __enter__(self) -> "RemoteFake":
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(self.kind, self.knobs, child), daemon=True)
        self._process.start()
        if not self._conn.poll(60):
            raise RuntimeError(f"the {self.kind} fake did not start")
        self.url = self._conn.recv()
        return self

    @property
    def pid(self) -> int:
        return self._process.pid or 0

    def report(self) -> tuple[dict[str, int], list[tuple[float, float]]]:
        self._conn.send("report")
        return self._conn.recv()

    def __exit__(self, *exc: Any) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
