"""MicroBatcher: merge small requests from many threads into shared batches.

Concurrent assets each score a handful of candidates; a model forward pass
costs much less per item at batch 8 than at batch 1, so one thread per process
collects the items that callers submit and runs them together:

- a pass starts as soon as `max_batch` items wait, or when the oldest waiting
  request has waited `max_wait_s` (so a lone caller is never stuck);
- a request larger than what is left of a batch is split across passes, and
  its caller gets its results, in order, once every item is done;
- when a pass raises, every request in it gets that exception.

`submit(items)` returns a Future; `__call__(items)` blocks for the results.
Nothing here knows about torch: `run(items) -> results` does the work.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable


class _Request:
    __slots__ = ("items", "taken", "left", "results", "future", "arrived")

    def __init__(self, items: list) -> None:
        self.items = items
        self.taken = 0  # items handed to a pass so far
        self.left = len(items)  # items whose results are still missing
        self.results: list = [None] * len(items)
        self.future: Future = Future()
        self.arrived = time.monotonic()


class MicroBatcher:
    """One background thread that runs `run` on batches of up to `max_batch` items from any thread."""

    def __init__(self, run: Callable[[list], list], max_batch: int, max_wait_s: float = 0.005, name: str = "microbatch") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_s)
        self.name = name
        self.passes = 0  # forward passes run (for benchmarks and tests)
        self.items_run = 0
        self._reset()

    def _reset(self) -> None:
        """Fresh lock, queue and (lazily) thread; also after a fork, where the parent's thread does not exist."""
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._pending_items = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---------------------------------------------------------------- callers

    def submit(self, items: list) -> Future:
        """A Future of `run`'s results for `items` (same order), computed in a shared batch."""
        if os.getpid() != self._pid:
            self._reset()
        request = _Request(list(items))
        if not request.items:
            request.future.set_result([])
            return request.future
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name}: batcher is closed")
            self._pending.append(request)
            self._pending_items += len(request.items)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return request.future

    def __call__(self, items: list) -> list:
        return self.submit(items).result()

    def close(self) -> None:
        """Run what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # ---------------------------------------------------------------- worker

    def _loop(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._run_batch(batch)
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            with self._cond:
                stranded, self._pending, self._pending_items = self._pending, [], 0
                self._thread = None
            for request in stranded:
                if not request.future.done():
                    request.future.set_exception(exc)
            raise

    def _next_batch(self) -> list[tuple[_Request, int, int]] | None:
        """Wait until a batch is due, then take up to `max_batch` items (oldest requests first)."""
        with self._cond:
            while True:
                if self._pending:
                    due = self._pending[0].arrived + self.max_wait_s - time.monotonic()
                    if self._pending_items >= self.max_batch or due <= 0 or self._closed:
                        break
                    self._cond.wait(due)
                elif self._closed:
                    self._thread = None
                    return None
                else:
                    self._cond.wait()
            batch, room = [], self.max_batch
            while self._pending and room:
                request = self._pending[0]
                count = min(room, len(request.items) - request.taken)
                batch.append((request, request.taken, request.taken + count))
                request.taken += count
                room -= count
                self._pending_items -= count
                if request.taken == len(request.items):
                    self._pending.pop(0)
            return batch

    def _run_batch(self, batch: list[tuple[_Request, int, int]]) -> None:
        items = [item for request, start, stop in batch for item in request.items[start:stop]]
        try:
            results = list(self._run(items))
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: run returned {len(results)} results for {len(items)} items")
        except BaseException as exc:
            self._fail({id(r): r for r, _, _ in batch}.values(), exc)
            return
        finally:
            with self._cond:
                self.passes += 1
                self.items_run += len(items)
        at = 0
        for request, start, stop in batch:
            count = stop - start
            if not request.future.done():  # a request failed by an earlier pass stays failed
                request.results[start:stop] = results[at:at + count]
                request.left -= count
                if request.left == 0:
                    request.future.set_result(request.results)
            at += count

    def _fail(self, requests: Any, exc: BaseException) -> None:
        """Hand `exc` to each request and drop what is left of it from the queue."""
        with self._cond:
            for request in requests:
                if request in self._pending:
                    self._pending.remove(request)
                    self._pending_items -= len(request.items) - request.taken
        for request in requests:
            if not request.future.done():
                request.future.set_exception(exc)
