"""Conformance suite: every provider block against its fake, over HTTP on 127.0.0.1.

Submit, poll, fetch; webhooks (valid, forged, replayed, duplicated); 429 with
Retry-After; 5xx; timeouts; malformed JSON; content filter; corrupt output.
The generation body (`run_generation`) runs without Prefect limits here; the
Prefect-backed paths (events, global limits, blocks) are in test_prefect_paths.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from brandforge.models import JobState, Rejected, Transient
from brandforge.tasks.generate import run_generation
from tests.fakes.base import Knobs, serve
from tests.providers.cases import all_cases

CASES = all_cases()


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request):
    return request.param


@pytest.fixture
def env(case, tmp_path):
    """(case, fake, block) with the fake running; webhooks off."""
    fake = case.make_fake(Knobs(latency_s=0.05, hang_s=1.5))
    with serve(fake):
        yield case, fake, case.make_block(fake, None, tmp_path)


def generate(block, request, **kw):
    kw.setdefault("poll_every", 0.1)
    kw.setdefault("deadline_s", 20)
    kw.setdefault("base_delay", 0.05)
    kw.setdefault("use_limits", False)
    return asyncio.run(run_generation(request, block, **kw))


def test_submit_poll_fetch(env, make_request):
    case, fake, block = env
    n = min(2, case.max_batch)
    handle, images, _ = generate(block, make_request(batch_size=n))
    assert handle.job_id and len(images) == n
    assert all(min(img.size) >= 32 for img in images)
    assert fake.stats["accepted"] == 1


def test_rate_limited_429_retried_after_retry_after(env, make_request):
    case, fake, block = env
    fake.knobs.faults = ["429"]
    _, images, _ = generate(block, make_request())
    assert fake.stats["429"] == 1 and fake.stats["accepted"] == 1 and len(images) == 1


def test_5xx_retried(env, make_request):
    case, fake, block = env
    fake.knobs.faults = ["500", "503"]
    _, images, _ = generate(block, make_request())
    assert fake.stats["5xx"] == 2 and len(images) == 1


def test_timeout_retried(env, make_request):
    case, fake, block = env
    fake.knobs.faults = ["timeout"]
    _, images, _ = generate(block, make_request())
    assert len(images) == 1


def test_persistent_5xx_gives_up_as_transient(env, make_request):
    case, fake, block = env
    fake.knobs.faults = ["500"] * 10
    with pytest.raises(Transient):
        generate(block, make_request(), attempts=3)


def test_content_filter_is_rejected_not_retried(env, make_request):
    case, fake, block = env
    with pytest.raises(Rejected) as err:
        generate(block, make_request(prompt="a forbidden picture"))
    assert case.content_filter.lower() in str(err.value).lower()
    assert fake.stats["submits"] == 1  # never retried


def test_corrupt_output_is_downloaded_again(env, make_request):
    case, fake, block = env
    fake.knobs.output_faults = ["corrupt"]
    _, images, _ = generate(block, make_request())
    assert len(images) == 1


def test_always_corrupt_output_fails_validation(env, make_request):
    case, fake, block = env
    fake.knobs.corrupt_rate = 1.0
    with pytest.raises(Transient, match="does not decode"):
        generate(block, make_request(), attempts=2)


def test_batch_over_provider_maximum_is_refused_before_any_call(env, make_request):
    case, fake, block = env
    if case.max_batch >= 8:
        pytest.skip(f"{case.name} takes every batch size the contract allows")
    with pytest.raises(Rejected, match="batch_size"):
        generate(block, make_request(batch_size=case.max_batch + 1))
    assert fake.stats["submits"] == 0


# --------------------------------------------------------------------------- webhooks


@pytest.fixture
def hooked(case, tmp_path, webhook_sink):
    if not case.webhooks:
        pytest.skip(f"{case.name} sends no webhooks")
    fake = case.make_fake(Knobs(latency_s=0.05))
    with serve(fake):
        yield case, fake, case.make_block(fake, f"{webhook_sink.url}/hook/{case.name}", tmp_path), webhook_sink


def _one_job(block, make_request, sink, expected: int = 1):
    handle, _, _ = generate(block, make_request())
    deliveries = asyncio.run(sink.wait_for(expected))
    return handle, deliveries


def test_webhook_valid(hooked, make_request):
    case, fake, block, sink = hooked
    handle, deliveries = _one_job(block, make_request, sink)
    assert len(deliveries) == 1
    event = block.verify_webhook(*deliveries[0])
    assert event.job_id == handle.job_id and event.state == JobState.succeeded and event.outputs


def test_webhook_submit_is_one_paid_job(hooked, make_request):
    """A submit with a webhook is accepted as the provider answers it (fal: the ids only, no URLs),
    never taken for a transient failure and submitted again."""
    case, fake, block, sink = hooked
    handle, deliveries = _one_job(block, make_request, sink)
    assert fake.stats["submits"] == 1 and fake.stats["accepted"] == 1
    assert handle.job_id and deliveries


def test_webhook_forged_is_rejected(hooked, make_request):
    case, fake, block, sink = hooked
    fake.knobs.webhook = "forged"
    _, deliveries = _one_job(block, make_request, sink)
    with pytest.raises(Rejected):
        block.verify_webhook(*deliveries[0])


def test_webhook_tampered_body_is_rejected(hooked, make_request):
    case, fake, block, sink = hooked
    if case.extra.get("unsigned"):
        pytest.skip(f"{case.name} webhooks carry a bearer token, not a signature over the body")
    _, deliveries = _one_job(block, make_request, sink)
    headers, body = deliveries[0]
    tampered = json.loads(body)
    tampered["__tampered"] = True
    with pytest.raises(Rejected):
        block.verify_webhook(headers, json.dumps(tampered).encode())


def test_webhook_replayed_later_is_rejected(hooked, make_request):
    case, fake, block, sink = hooked
    _, deliveries = _one_job(block, make_request, sink)
    block.verify_webhook(*deliveries[0])  # fresh: fine
    with pytest.raises(Rejected, match="replay|old|timestamp"):
        block.verify_webhook(*deliveries[0], now=time.time() + 3600)


def test_webhook_duplicated_has_one_delivery_id(hooked, make_request):
    case, fake, block, sink = hooked
    fake.knobs.webhook = "duplicate"
    handle, deliveries = _one_job(block, make_request, sink, expected=2)
    assert len(deliveries) == 2
    first, second = (block.verify_webhook(*d) for d in deliveries)
    assert first.job_id == second.job_id == handle.job_id
    assert first.delivery_id == second.delivery_id  # what the gateway deduplicates on


def test_webhook_lost_job_still_finishes_by_polling(hooked, make_request):
    case, fake, block, sink = hooked
    fake.knobs.webhook = "lost"
    _, images, _ = generate(block, make_request())
    assert len(images) == 1 and sink.deliveries == []


def test_malformed_json_retried(env, make_request):
    case, fake, block = env
    fake.knobs.faults = ["malformed"]
    _, images, _ = generate(block, make_request())
    assert len(images) == 1


def test_webhook_late_job_finishes_by_polling_and_late_delivery_still_verifies(hooked, make_request):
    case, fake, block, sink = hooked
    fake.knobs.webhook, fake.knobs.webhook_late_s = "late", 0.5
    handle, images, _ = generate(block, make_request())
    assert len(images) == 1 and sink.deliveries == []  # done before the webhook arrived
    deliveries = asyncio.run(sink.wait_for(1))
    assert block.verify_webhook(*deliveries[0]).job_id == handle.job_id
