"""The job journal seen from one generation: reserve, accept, resume, close — against the Replicate fake over HTTP."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from brandforge.blocks.ledger import Ledger
from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.models import Transient
from brandforge.tasks.generate import JobAccount, run_generation
from tests.fakes import replicate as fake_replicate
from tests.fakes.base import Knobs, serve


@pytest.fixture
def fake_and_block(tmp_path):
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=0.05, webhook="lost"))
    with serve(fake):
        yield fake, ReplicateProvider(base_url=fake.url, api_key=fake_replicate.TOKEN, request_timeout_s=5.0,
                                      job_dir=str(tmp_path / "jobs"), price_per_image_usd=0.0115)


def generate(request, block, account, **kw):
    return asyncio.run(run_generation(request, block, poll_every=0.05, deadline_s=20, base_delay=0.01,
                                      use_limits=False, listen=False, account=account, **kw))


def test_a_job_is_on_record_at_its_price_and_closed_when_home(fake_and_block, make_request, tmp_path):
    fake, block = fake_and_block
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'l.db'}")
    handle, _, _ = generate(make_request(), block, JobAccount(ledger=ledger, client="acme", run_key="r1"))
    (job,) = ledger.jobs("acme")
    assert (job.job_id, job.state, job.cost_usd) == (handle.job_id, "succeeded", Decimal("0.0115"))
    assert ledger.spent("acme", run_key="r1") == Decimal("0.0115") and fake.stats["accepted"] == 1


def test_a_job_whose_outputs_never_decode_is_closed_so_the_next_attempt_submits_anew(fake_and_block, make_request, tmp_path):
    fake, block = fake_and_block
    fake.knobs.corrupt_rate = 1.0
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'l.db'}")
    account = JobAccount(ledger=ledger, client="acme")
    with pytest.raises(Transient, match="does not decode"):
        generate(make_request(), block, account, attempts=2)
    assert [j.state for j in ledger.jobs("acme")] == ["failed"] and ledger.open_job("acme", ledger.jobs("acme")[0].request_key) is None
    fake.knobs.corrupt_rate = 0.0
    generate(make_request(), block, account)  # a new job, not the unusable one resumed
    assert [j.state for j in ledger.jobs("acme")] == ["failed", "succeeded"] and fake.stats["accepted"] == 2


def test_a_refused_submission_is_released_and_costs_nothing(fake_and_block, make_request, tmp_path):
    fake, block = fake_and_block
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'l.db'}")
    fake.knobs.faults = ["422"]
    with pytest.raises(Exception):
        generate(make_request(), block, JobAccount(ledger=ledger, client="acme"))
    assert [j.state for j in ledger.jobs("acme")] == ["released"] and ledger.spent("acme") == 0
