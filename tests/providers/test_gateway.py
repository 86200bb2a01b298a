"""The webhook gateway end to end: fake provider → gateway → Prefect event → waiting generation."""

from __future__ import annotations

import asyncio

import pytest

from brandforge.blocks.providers.fal import FalProvider
from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.deployments.gateway import build_app
from brandforge.tasks.generate import run_generation
from tests.fakes import fal as fake_fal
from tests.fakes import replicate as fake_replicate
from tests.fakes.base import Knobs, Served, serve


class Recorder:
    """Forwards to Prefect's emit_event and keeps what went out."""

    def __init__(self):
        self.events: list[dict] = []

    def __call__(self, **kwargs):
        from prefect.events import emit_event

        self.events.append(kwargs)
        emit_event(**kwargs)


def _replicate_block(fake, gateway_url, tmp_path):
    return ReplicateProvider(base_url=fake.url, api_key=fake_replicate.TOKEN, webhook_secret=fake_replicate.WEBHOOK_SECRET,
                             webhook_url=f"{gateway_url}/webhooks/replicate", request_timeout_s=2.0,
                             job_dir=str(tmp_path / "jobs"))


@pytest.fixture
def stack(tmp_path):
    """A Replicate fake and a gateway that verifies with the same block the task uses."""
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=0.3))
    recorder = Recorder()
    holder: dict = {}
    with serve(fake):
        gateway_app = build_app(holder, emit=recorder)
        with Served(gateway_app) as gw:
            block = _replicate_block(fake, gw.url, tmp_path)
            holder["replicate"] = block
            yield fake, block, recorder


def test_webhook_through_gateway_wakes_the_generation(prefect_server, stack, make_request):
    fake, block, recorder = stack
    fake.knobs.webhook = "duplicate"
    # Polling every 60 s: only the gateway's event can bring this home quickly.
    handle, images, timings = asyncio.run(run_generation(make_request(), block, poll_every=60, deadline_s=120))
    assert len(images) == 1 and timings["events"] >= 1
    deadline = asyncio.run(_wait(lambda: len(fake.webhooks_sent) >= 2))
    assert deadline
    assert [w["status"] for w in fake.webhooks_sent] == [200, 200]
    # Two deliveries, one event.
    assert len(recorder.events) == 1
    event = recorder.events[0]
    assert event["event"] == "brandforge.generation.completed"
    assert event["resource"]["prefect.resource.id"] == f"brandforge.job.replicate.{handle.job_id}"
    assert set(event["payload"]) <= {"provider", "job_id", "state", "outputs", "error"}
    assert fake_replicate.TOKEN not in str(event) and "whsec_" not in str(event)


def test_forged_webhook_is_refused_and_emits_nothing(prefect_server, stack, make_request):
    fake, block, recorder = stack
    fake.knobs.webhook = "forged"
    _, images, _ = asyncio.run(run_generation(make_request(), block, poll_every=0.2, deadline_s=30))
    assert len(images) == 1  # polling still brought it home
    assert asyncio.run(_wait(lambda: fake.webhooks_sent))
    assert fake.webhooks_sent[0]["status"] == 401 and recorder.events == []


def test_fal_webhook_through_gateway(prefect_server, tmp_path, make_request):
    fake = fake_fal.FakeFal(Knobs(latency_s=0.3))
    recorder = Recorder()
    holder: dict = {}
    with serve(fake), Served(build_app(holder, emit=recorder)) as gw:
        block = FalProvider(base_url=fake.url, api_key=fake_fal.KEY, jwks_url=f"{fake.url}/.well-known/jwks.json",
                            webhook_url=f"{gw.url}/webhooks/fal", request_timeout_s=2.0, job_dir=str(tmp_path / "j"))
        holder["fal"] = block
        handle, images, timings = asyncio.run(run_generation(make_request(), block, poll_every=60, deadline_s=120))
        assert len(images) == 1 and timings["events"] >= 1
        assert recorder.events[0]["payload"]["job_id"] == handle.job_id


async def _wait(predicate, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())
