"""Provider paths that need a real Prefect API: events waking the wait, global limits, block storage."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from prefect import flow

from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.models import Rejected
from brandforge.tasks.generate import COMPLETED_EVENT, generate_images, run_generation
from tests.fakes import replicate as fake_replicate
from tests.fakes.base import Knobs, serve


@pytest.fixture
def replicate(tmp_path, webhook_sink):
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=0.3, webhook="lost"))
    with serve(fake):
        block = ReplicateProvider(
            base_url=fake.url, api_key=fake_replicate.TOKEN, webhook_secret=fake_replicate.WEBHOOK_SECRET,
            webhook_url=f"{webhook_sink.url}/hook/replicate", request_timeout_s=2.0, job_dir=str(tmp_path / "jobs"),
            requests_per_minute=120, max_concurrent_jobs=3, price_per_image_usd=0.01,
            limit_group=f"paths-{tmp_path.name.lower().replace('_', '-')}"[:40],  # slots of its own, whatever earlier tests left held
        )
        yield fake, block


def emit_when_done(fake, block, *, times: int = 1) -> threading.Thread:
    """Play the webhook gateway: once the fake's job is done, emit the completion event (maybe twice)."""
    from prefect.events import emit_event

    def run() -> None:
        deadline = time.monotonic() + 30
        while not (fake.jobs and all(j.done() for j in fake.jobs.values())) and time.monotonic() < deadline:
            time.sleep(0.05)
        for job_id in list(fake.jobs):
            for _ in range(times):
                emit_event(event=COMPLETED_EVENT, resource={"prefect.resource.id": block.job_resource_id(job_id)},
                           payload={"provider": "replicate", "job_id": job_id})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_completion_event_wakes_the_wait_before_the_next_poll(prefect_server, replicate, make_request):
    fake, block = replicate
    thread = emit_when_done(fake, block, times=2)  # duplicated: must still bring the job home once
    # Polling every 60 s: only the relayed event can end this wait early.
    handle, images, timings = asyncio.run(run_generation(make_request(), block, poll_every=60, deadline_s=120))
    thread.join(5)
    assert len(images) == 1
    assert timings["events"] >= 1
    assert fake.stats["accepted"] == 1


def test_lost_webhook_still_finishes_by_polling(prefect_server, replicate, make_request):
    fake, block = replicate
    _, images, timings = asyncio.run(run_generation(make_request(), block, poll_every=0.2, deadline_s=30))
    assert len(images) == 1 and timings["events"] == 0 and timings["polls"] >= 2


def test_global_limits_are_created_from_the_block(prefect_server, replicate, make_request):
    from prefect.client.orchestration import get_client

    fake, block = replicate
    asyncio.run(run_generation(make_request(), block, poll_every=0.2, deadline_s=30, listen=False))

    async def read():
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name(block.rate_limit_name),
                    await client.read_global_concurrency_limit_by_name(block.concurrency_limit_name))

    rate, jobs = asyncio.run(read())
    from brandforge.tasks.provider_limits import RATE_BATCH_SECONDS, RATE_BATCHES_HELD

    # RATE_BATCHES_HELD batches of a 120/min budget (in hand, and asked for); slots decay at 2 per second.
    assert rate.limit == RATE_BATCHES_HELD * round(2 * RATE_BATCH_SECONDS) and rate.slot_decay_per_second == pytest.approx(2.0)
    assert jobs.limit == 3 and not jobs.slot_decay_per_second
    assert jobs.active_slots == 0  # released after the job


def test_generate_task_records_price_and_fails_refusals_without_retry(prefect_server, replicate, make_request, tmp_path):
    fake, block = replicate

    @flow
    def one(prompt: str):
        return generate_images.submit(make_request(prompt=prompt, batch_size=2), block, str(tmp_path / "out"),
                                      poll_every=0.2, deadline_s=30).result()

    result = one("watercolour of a red mug")
    assert len(result.images) == 2 and result.cost_usd == pytest.approx(0.02)
    assert result.job_ids and result.provider == "replicate"
    with pytest.raises(Rejected, match="NSFW"):
        one("a forbidden picture")
    assert fake.stats["submits"] == 2  # the refusal was asked once, never retried


def test_provider_block_round_trips_through_client_profile(prefect_server, tmp_path):
    from brandforge.blocks.client_profile import ClientProfile
    from brandforge.blocks.ledger import Ledger

    block = ReplicateProvider(api_key="r8_secret_value", webhook_secret="whsec_c2VjcmV0LXNpZ25pbmcta2V5LTI0Ynl0ZXM", model="acme/img2img",
                              prefer_wait_s=10, price_per_image_usd=0.02)
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}")
    ClientProfile(client_id="acme", provider=block, ledger=ledger).save("acme-providers-test", overwrite=True)
    loaded = ClientProfile.load("acme-providers-test")
    assert isinstance(loaded.provider, ReplicateProvider)
    assert loaded.provider.api_key.get_secret_value() == "r8_secret_value"
    assert loaded.provider.model == "acme/img2img" and loaded.provider.prefer_wait_s == 10
    assert "r8_secret_value" not in repr(loaded.provider) and "r8_secret_value" not in str(loaded.provider.model_dump())


def test_paced_slots_are_granted_without_refusals(prefect_server):
    """Many callers on several threads/loops share one budget: batched grants, no 423 from Prefect."""
    from brandforge.tasks.provider_limits import ensure_provider_limits, take_submit_slot

    block = ReplicateProvider(api_key="x", requests_per_minute=1200, max_concurrent_jobs=4, limit_group="pacer-test")
    asyncio.run(ensure_provider_limits(block))
    counters: list[dict] = []

    def worker() -> None:
        async def take_some() -> None:
            for _ in range(8):
                c: dict = {}
                await take_submit_slot(block, counters=c)
                counters.append(c)

        asyncio.run(take_some())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(counters) == 24
    assert sum(c.get("rate_denials", 0) for c in counters) == 0


def test_content_filter_ends_the_asset_failed_with_the_providers_reason(prefect_server, demo_profile, demo_state,
                                                                        replicate, tmp_path):
    import shutil


    from brandforge.flows.process_asset import process_asset
    from brandforge.models import AssetRef
    from tests.conftest import DEMO_CATALOG

    fake, block = replicate
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    shutil.copy(DEMO_CATALOG / "coffee-cup.jpg", catalog / "coffee-cup.jpg")
    profile = demo_profile.model_copy(update={"provider": block.model_copy(update={"webhook_url": None}),
                                              "prompt_template": "forbidden {style} of {subject}",
                                              "prompt_templates": None})  # this one template, not the demo's set
    asset = AssetRef(client="demo", uri=(catalog / "coffee-cup.jpg").as_uri(), name="coffee-cup.jpg")
    outcome = process_asset(asset, profile=profile, source_folder=str(catalog),
                            work_dir=str(demo_state / "work"))
    assert outcome.state == "failed", outcome
    assert outcome.reason.startswith("generate:") and "NSFW content detected" in outcome.reason, outcome.reason
    assert fake.stats["submits"] == 1, fake.stats  # a refusal is never asked again


def test_job_slots_never_exceed_the_cap_and_all_go_back(prefect_server):
    """12 holders on 3 threads (3 event loops) share a cap of 4; afterwards the server holds none."""
    from prefect.client.orchestration import get_client

    from brandforge.tasks.provider_limits import ensure_provider_limits, job_slot

    block = ReplicateProvider(api_key="x", max_concurrent_jobs=4, limit_group="pool-test")
    assert block.concurrency_limit_name == "brandforge-provider-replicate-pool-test-jobs"
    asyncio.run(ensure_provider_limits(block))
    inside = {"now": 0, "max": 0}
    lock = threading.Lock()

    async def hold() -> None:
        async with job_slot(block, lease_s=300):
            with lock:
                inside["now"] += 1
                inside["max"] = max(inside["max"], inside["now"])
            await asyncio.sleep(0.2)
            with lock:
                inside["now"] -= 1

    def worker() -> None:
        async def four() -> None:
            await asyncio.gather(*(hold() for _ in range(4)))

        asyncio.run(four())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    async def active() -> int:
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name(block.concurrency_limit_name)).active_slots

    assert inside["max"] <= 4 and inside["now"] == 0
    assert asyncio.run(active()) == 0


def test_polls_follow_the_providers_recent_job_times(prefect_server, make_request, tmp_path):
    """Over HTTP against the Replicate fake (1 s jobs, no webhook): the first jobs poll every 0.25 s
    (a fifth of the time waited, at least 0.25 s); once three jobs are on record, a job's first poll
    after the submit comes near their usual time, so it needs fewer polls."""
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=1.0))
    with serve(fake):
        block = ReplicateProvider(base_url=fake.url, api_key=fake_replicate.TOKEN, request_timeout_s=5.0,
                                  job_dir=str(tmp_path / "jobs"), requests_per_minute=600, max_concurrent_jobs=3,
                                  limit_group=f"polls-{tmp_path.name.lower().replace('_', '-')}"[:40])
        polls = []
        for seed in range(4):
            _, _, timings = asyncio.run(run_generation(make_request(seed=100 + seed), block, poll_every=5.0,
                                                       deadline_s=30, listen=False))
            polls.append(timings["polls"])
    assert all(p >= 4 for p in polls[:3]), polls
    assert polls[3] <= 3 and polls[3] < min(polls[:3]), polls


def test_warm_up_takes_the_first_slots_and_cool_down_gives_unused_ones_back(prefect_server):
    """Before a catalog's first asset: limits set, a batch of rate slots and a lease of job slots in hand;
    at its end, a lease no job used goes back to the server at once."""
    from prefect.client.orchestration import get_client

    from brandforge.tasks.provider_limits import JOB_LEASE_S, JobSlotPool, SubmitPacer, cool_down, rate_batch_size, warm_up

    block = ReplicateProvider(api_key="x", requests_per_minute=120, max_concurrent_jobs=8, limit_group="warm-test")

    async def active() -> int:
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name(block.concurrency_limit_name)).active_slots

    warm_up(block)
    pool = JobSlotPool.for_provider(block, JOB_LEASE_S)
    assert SubmitPacer.for_provider(block).tokens == rate_batch_size(block) == 10
    assert pool.free == pool.batch == 2 and len(pool.leases) == 1
    assert asyncio.run(active()) == 2
    cool_down(block)
    assert pool.free == 0 and not pool.leases
    assert asyncio.run(active()) == 0


def test_limit_calls_ask_for_a_csrf_token_once_per_server(prefect_server, monkeypatch):
    """A server without CSRF protection says so once; later limit calls (a new client each) skip the question."""
    from brandforge.tasks import provider_limits
    from brandforge.tasks.provider_limits import QuickConflictRetry, rate_slots

    block = ReplicateProvider(api_key="x", requests_per_minute=600, max_concurrent_jobs=8, limit_group="csrf-test")
    asyncio.run(provider_limits.ensure_provider_limits(block))
    paths: list[str] = []
    handle = QuickConflictRetry.handle_async_request

    async def recording(self, request):
        paths.append(request.url.path)
        return await handle(self, request)

    monkeypatch.setattr(QuickConflictRetry, "handle_async_request", recording)
    monkeypatch.setattr(provider_limits, "_NO_CSRF", set())
    granted = [asyncio.run(rate_slots(block, 1)) for _ in range(4)]
    assert granted == [1, 1, 1, 1]
    assert paths.count("/api/v2/concurrency_limits/increment") == 4
    assert paths.count("/api/csrf-token") == 1, paths
