"""MicroBatcher: requests from many threads merged into shared passes (no torch needed).

Merging is made deterministic by a long `max_wait_s` and a `max_batch` equal
to the number of items the threads submit: the pass can only start when all
of them are queued. The timeout path uses a short wait and one caller.
"""

from __future__ import annotations

import threading

import pytest

from brandforge.blocks.microbatch import MicroBatcher


class Recorder:
    """A `run` that doubles its items and records each pass; raises while `fail` is set."""

    def __init__(self) -> None:
        self.passes: list[list] = []
        self.fail: Exception | None = None
        self.lock = threading.Lock()

    def __call__(self, items: list) -> list:
        with self.lock:
            self.passes.append(list(items))
        if self.fail is not None:
            raise self.fail
        return [2 * i for i in items]


def call_in_threads(fn, requests: list) -> list:
    """fn(request) for each request, each from its own thread, all released at once; a slot holds the result or the exception."""
    barrier = threading.Barrier(len(requests))
    out: list = [None] * len(requests)

    def call(slot: int) -> None:
        barrier.wait()
        try:
            out[slot] = fn(requests[slot])
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[slot] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a caller is still waiting"
    return out


def in_threads(batcher: MicroBatcher, requests: list[list]) -> list:
    return call_in_threads(lambda items: batcher.submit(items).result(timeout=60), requests)


def test_concurrent_callers_share_one_pass_and_get_their_own_results():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=6, max_wait_s=30)
    requests = [[10 * i] for i in range(4)] + [[100, 101]]
    out = in_threads(batcher, requests)
    assert out == [[0], [20], [40], [60], [200, 202]]
    assert len(run.passes) == 1 and sorted(run.passes[0]) == [0, 10, 20, 30, 100, 101]
    assert batcher.passes == 1 and batcher.items_run == 6


def test_a_single_caller_is_flushed_when_the_wait_runs_out():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.02)
    assert batcher.submit([7]).result(timeout=30) == [14]
    assert batcher([1, 2]) == [2, 4]
    assert run.passes == [[7], [1, 2]]


def test_a_large_request_is_split_into_passes_of_max_batch_in_order():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=3, max_wait_s=0.01)
    assert batcher(list(range(7))) == [2 * i for i in range(7)]
    assert [len(p) for p in run.passes] == [3, 3, 1]
    assert batcher([]) == []


def test_an_error_reaches_every_caller_of_the_pass_and_the_batcher_keeps_working():
    run = Recorder()
    run.fail = RuntimeError("forward pass failed")
    batcher = MicroBatcher(run, max_batch=4, max_wait_s=30)
    out = in_threads(batcher, [[1], [2], [3], [4]])
    assert all(isinstance(o, RuntimeError) and "forward pass failed" in str(o) for o in out)
    assert len(run.passes) == 1
    run.fail = None
    assert in_threads(batcher, [[1], [2], [3], [4]]) == [[2], [4], [6], [8]]


def test_a_request_split_over_passes_fails_whole_when_one_pass_fails():
    """A failure in its first pass fails the request; what is left of it is not run."""
    run = Recorder()
    run.fail = ValueError("bad batch")
    batcher = MicroBatcher(run, max_batch=2, max_wait_s=0.01)
    with pytest.raises(ValueError, match="bad batch"):
        batcher([1, 2, 3, 4, 5])
    assert len(run.passes) == 1
    run.fail = None
    assert batcher([5]) == [10]


def test_a_run_returning_the_wrong_number_of_results_is_an_error():
    batcher = MicroBatcher(lambda items: items[:-1], max_batch=4, max_wait_s=0.01)
    with pytest.raises(RuntimeError, match="1 results for 2 items"):
        batcher([1, 2])


def test_close_runs_what_is_queued_then_refuses_more():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=8, max_wait_s=30)
    future = batcher.submit([3])
    batcher.close()
    assert future.result(timeout=30) == [6]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit([1])
