"""Fixtures for the post-processing tests: the fake refiner service and refiner blocks pointed at it."""

from __future__ import annotations

import pytest

from brandforge.blocks.refiners import ReplicateRefiner, StabilityRefiner
from tests.fakes.refiners import STABILITY_KEY, TOKEN, FakeRefinerServer


@pytest.fixture(scope="module")
def fake_refiners():
    with FakeRefinerServer() as server:
        yield server


@pytest.fixture
def fake(fake_refiners):
    """The running fake with its records and injected faults cleared for this test."""
    s = fake_refiners.state
    s.calls.clear()
    s.inputs.clear()
    s.fail_next.clear()
    return fake_refiners


@pytest.fixture
def replicate(fake) -> ReplicateRefiner:
    return ReplicateRefiner(api_key=TOKEN, base_url=fake.url, prefer_wait_s=1, refine_poll_s=0.05, request_timeout_s=10,
                            refine_deadline_s=20)


@pytest.fixture
def stability(fake) -> StabilityRefiner:
    return StabilityRefiner(api_key=STABILITY_KEY, base_url=fake.url, request_timeout_s=10)
