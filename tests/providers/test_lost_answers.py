"""A submission whose answer never came back is not paid for twice (found by `bench/soak.py`).

Replicate takes no idempotency key: a submit that times out after the provider
made the job, or a process killed between the provider's answer and the journal
write, leaves a billed job nobody knows about, and the next attempt used to pay
for another. Now a retried submit, and a rerun that finds another run's
reservation never answered, first look the job up (`find_job`, GET /v1/predictions).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from brandforge.blocks.ledger import Ledger
from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.tasks.generate import JobAccount, request_key, run_generation
from tests.fakes import replicate as fake_replicate
from tests.fakes.base import Knobs, serve


@pytest.fixture
def fake_and_block(tmp_path):
    # The fake hangs a lost answer longer than the block waits: the client times out, the job exists.
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=0.05, webhook="lost", hang_s=1.5))
    with serve(fake):
        yield fake, ReplicateProvider(base_url=fake.url, api_key=fake_replicate.TOKEN, request_timeout_s=0.7,
                                      job_dir=str(tmp_path / "jobs"), price_per_image_usd=0.0115)


def generate(request, block, account):
    return asyncio.run(run_generation(request, block, poll_every=0.05, deadline_s=20, base_delay=0.01,
                                      use_limits=False, listen=False, account=account))


def test_a_submit_whose_answer_is_lost_resumes_the_job_it_made(fake_and_block, make_request, tmp_path):
    fake, block = fake_and_block
    fake.knobs.lost_answer_rate = 1.0  # every submit's answer is lost: only a lookup can find the job
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'l.db'}")
    handle, images, _ = generate(make_request(), block, JobAccount(ledger=ledger, client="acme"))
    assert len(images) == 1 and fake.stats["accepted"] == 1 and fake.stats["lists"] >= 1
    (job,) = ledger.jobs("acme")
    assert (job.job_id, job.state, job.cost_usd) == (handle.job_id, "succeeded", Decimal("0.0115"))
    assert handle.job_id in fake.jobs


def test_a_dead_runs_unanswered_reservation_is_resumed_not_paid_again(fake_and_block, make_request, tmp_path):
    fake, block = fake_and_block
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'l.db'}")
    request = make_request()
    key = request_key(block, request)
    # The dead run: reserved, submitted (the provider made and billed the job), killed before writing the answer.
    ledger.reserve_job(client="acme", provider="replicate", model=block.model, amount=0.0115, request_key=key)
    made = asyncio.run(block.submit(request))
    assert fake.stats["accepted"] == 1 and ledger.jobs("acme")[0].job_id is None

    fake.knobs.faults = ["503"]  # the first lookup fails: it is retried, not given up for a new submission
    handle, images, _ = generate(request, block, JobAccount(ledger=ledger, client="acme"))
    assert handle.job_id == made.job_id and len(images) == 1 and fake.stats["lists"] == 2
    assert fake.stats["accepted"] == 1  # found at the provider, not submitted again
    (job,) = ledger.jobs("acme")
    assert (job.job_id, job.state) == (made.job_id, "succeeded")


def test_a_dead_runs_reservation_with_no_job_is_released(fake_and_block, make_request, tmp_path):
    fake, block = fake_and_block
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'l.db'}")
    request = make_request()
    ledger.reserve_job(client="acme", provider="replicate", model=block.model, amount=0.0115,
                       request_key=request_key(block, request))  # killed before it submitted anything
    generate(request, block, JobAccount(ledger=ledger, client="acme"))
    assert [j.state for j in ledger.jobs("acme")] == ["released", "succeeded"]
    assert fake.stats["accepted"] == 1 and ledger.spent("acme") == Decimal("0.0115")  # the dead reservation no longer counts


def test_a_job_of_another_request_is_not_taken(fake_and_block, make_request, tmp_path):
    fake, block = fake_and_block
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'l.db'}")
    asyncio.run(block.submit(make_request(seed=99)))  # same prompt and source, another seed: another generation
    request = make_request()
    ledger.reserve_job(client="acme", provider="replicate", model=block.model, amount=0.0115, request_key=request_key(block, request))
    handle, _, _ = generate(request, block, JobAccount(ledger=ledger, client="acme"))
    assert fake.stats["accepted"] == 2 and fake.jobs[handle.job_id].params["input"]["seed"] == 1234
