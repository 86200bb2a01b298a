"""The pieces that keep a provider busy through a catalog: the pacer's prefetch, the quick
retry of the Prefect server's write conflicts, and the learned poll schedule."""

from __future__ import annotations

import asyncio
import math
import time

import httpx
import pytest

from brandforge.tasks.generate import PollSchedule
from brandforge.tasks.provider_limits import QuickConflictRetry, SubmitPacer


def test_the_pacer_asks_for_the_next_batch_before_the_last_is_spent():
    pacer = SubmitPacer(per_second=2.0, batch=10, limit=20)
    asked: list[int] = []

    async def acquire(n: int) -> int:
        asked.append(n)
        return n

    async def take(times: int) -> None:
        for _ in range(times):
            await pacer.take(acquire)

    asyncio.run(take(1))
    assert asked == [10]  # a whole batch for one caller: more are coming
    asyncio.run(take(10))  # the batch's other 9, then the next batch at once (the server has room)
    assert asked == [10, 10]
    # Twenty held by the server: the next batch fits once one batch has decayed (10 slots at 2/s, +2 %).
    assert pacer.next_grant_at - time.monotonic() == pytest.approx(5.1, abs=0.2)


def test_a_prefetched_batch_serves_the_first_callers_without_a_grant():
    pacer = SubmitPacer(per_second=2.0, batch=10, limit=20)
    asked: list[int] = []

    async def acquire(n: int) -> int:
        asked.append(n)
        return n

    async def scenario() -> bool:
        first = await pacer.prefetch(acquire)
        again = await pacer.prefetch(acquire)  # tokens in hand: nothing more is asked
        assert (first, again) == (True, False)
        for _ in range(5):
            await pacer.take(acquire)
        return True

    assert asyncio.run(scenario())
    assert asked == [10] and pacer.tokens == 5


def test_the_pacer_hands_out_no_slot_more_than_a_batch_ahead_of_its_send_time():
    pacer = SubmitPacer(per_second=2.0, batch=10, limit=20)

    async def acquire(n: int) -> int:
        return n

    async def scenario() -> bool:
        await pacer.take(acquire)
        for _ in range(11):  # send times queued 5.5 s ahead
            pacer.reserve()
        try:
            await asyncio.wait_for(pacer.take(acquire), timeout=0.3)
            return True
        except asyncio.TimeoutError:
            return False

    assert asyncio.run(scenario()) is False
    assert pacer.tokens == 9  # kept for later callers, not handed out early


def test_a_refusal_asks_again_when_one_more_slot_has_decayed():
    pacer = SubmitPacer(per_second=2.0, batch=10, limit=20)
    answers = iter([0, 10])
    asked: list[float] = []

    async def acquire(n: int) -> int:
        asked.append(time.monotonic())
        return next(answers)

    assert asyncio.run(pacer.take(acquire)) == 1  # one refusal seen, then granted
    assert 0.0 < asked[1] - asked[0] <= 0.5 + 0.1  # one slot's decay at 2/s, and a little jitter


def test_batches_are_asked_for_when_the_servers_own_arithmetic_has_room():
    """Against Prefect's rate-limit row (decayed by floor(rate × seconds since it was last written); only a
    grant writes it), the pacer asks when the server has room: not early (refused), not late (idle)."""
    rate, batch, limit = 20.0, 10, 20
    row = {"active": 0, "updated": time.monotonic()}
    seen = {"refused": 0, "granted": 0}

    async def acquire(n: int) -> int:
        await asyncio.sleep(0.002)  # a call's time
        now = time.monotonic()
        active = max(0, row["active"] - math.floor(rate * (now - row["updated"])))
        if active + n > limit:
            seen["refused"] += 1
            return 0
        row.update(active=active + n, updated=now)
        seen["granted"] += 1
        return n

    pacer = SubmitPacer(per_second=rate, batch=batch, limit=limit)

    async def take_all() -> None:
        for _ in range(200):  # 20 batches: 2 at once, then one per 0.5 s of decay
            await pacer.take(acquire)

    asyncio.run(take_all())
    assert seen["granted"] == 20
    assert seen["refused"] <= 2, seen  # a smooth count that ignored the floor: 44 refusals


def test_server_write_conflicts_are_retried_at_once_not_after_prefects_backoff():
    answers = iter([503, 503, 200])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content.decode())
        return httpx.Response(next(answers), json={})

    transport = QuickConflictRetry()
    transport.inner = httpx.MockTransport(handler)

    async def call() -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://prefect.test") as client:
            return (await client.post("/api/v2/concurrency_limits/increment", json={"slots": 3})).status_code

    assert asyncio.run(call()) == 200
    assert seen == ['{"slots":3}'] * 3  # the same body each time


def test_a_conflict_that_does_not_clear_reaches_prefects_own_retries():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503, json={})

    transport = QuickConflictRetry()
    transport.inner = httpx.MockTransport(handler)
    transport.ATTEMPTS = 3

    async def call() -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://prefect.test") as client:
            return (await client.post("/x", json={})).status_code

    assert asyncio.run(call()) == 503 and len(calls) == 3


def test_polls_start_near_the_providers_usual_job_time():
    name = "poll-schedule-test"

    def polls_until(done_at: float, schedule: PollSchedule) -> tuple[float, int]:
        elapsed, polls = 0.0, 0
        while elapsed < done_at:
            elapsed += schedule.next_delay(elapsed)
            polls += 1
        return elapsed, polls

    # No history: the next poll after a fifth of the time waited, so a job is seen at most ~20 % late.
    seen, polls = polls_until(5.0, PollSchedule(name, poll_every=5.0))
    assert 5.0 <= seen <= 6.0 and polls <= 16  # the old fixed backoff saw it at 7.75 s
    seen, polls = polls_until(60.0, PollSchedule(name, poll_every=5.0))
    assert 60.0 <= seen <= 65.0 and polls <= 30  # a slow job: capped at poll_every, few polls

    waiting = PollSchedule(name, poll_every=5.0)
    assert waiting.next_delay(1.0) == 0.25
    for seconds in (5.1, 4.9, 5.0, 5.2):
        PollSchedule.record(name, seconds)
    assert waiting.next_delay(1.5) == pytest.approx(4.08 - 1.5)  # a job already waiting learns from those that finished
    learned = PollSchedule(name, poll_every=5.0)
    assert learned.next_delay(0.0) == pytest.approx(4.08)  # 80 % of the median (5.1)
    assert learned.next_delay(4.1) == pytest.approx(0.51)  # then a tenth of it
    assert learned.next_delay(9.9) == pytest.approx(0.51)
    assert learned.next_delay(10.3) == pytest.approx(0.51)  # past twice the median: back off from there
    assert learned.next_delay(10.9) == pytest.approx(1.02)


def test_the_limit_calls_verify_tls_as_prefects_own_client_does():
    import ssl

    from prefect.settings import PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

    from brandforge.tasks.provider_limits import prefect_tls_context

    strict = prefect_tls_context()
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    assert prefect_tls_context() is strict  # made once, not per call
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        assert prefect_tls_context().verify_mode == ssl.CERT_NONE


def test_behind_a_proxy_the_limit_calls_keep_prefects_own_transport(monkeypatch):
    from brandforge.tasks.provider_limits import through_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert through_proxy("https://api.prefect.example/api")
    assert not through_proxy("http://127.0.0.1:4200/api")  # no proxy for http, and 127.0.0.1 bypasses
    monkeypatch.delenv("HTTPS_PROXY")
    assert not through_proxy("https://api.prefect.example/api")
