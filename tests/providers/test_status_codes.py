"""One HTTP layer: the same status code means the same thing to a provider, a refiner and a target.

A StatusServer (tests/fakes/base.py) answers every request with one code and a
Retry-After header, over a real socket; each block meets it through its own
public method.
"""

from __future__ import annotations

import asyncio

import pytest

from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.blocks.refiners import ReplicateRefiner, StabilityRefiner
from brandforge.blocks.targets.strapi import StrapiSite
from brandforge.blocks.targets.wordpress import WordPressSite
from brandforge.models import ProviderError, PublishError, PublishItem, RateLimited, Rejected, Transient
from tests.fakes.base import Served, StatusServer

CODES = [400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504]
EXPECTED = {429: RateLimited, 500: Transient, 502: Transient, 503: Transient, 504: Transient}


@pytest.fixture(scope="module")
def server():
    fake = StatusServer()
    with Served(fake.app) as served:
        fake.url = served.url
        yield fake


def outcome(exc: BaseException) -> tuple[bool, float | None]:
    """(retryable, retry_after): what every caller's retry policy reads."""
    assert isinstance(exc, (ProviderError, PublishError)), exc
    return exc.retryable, getattr(exc, "retry_after", None)


def raised(coro) -> BaseException:
    with pytest.raises((ProviderError, PublishError)) as info:
        asyncio.run(coro)
    return info.value


@pytest.mark.parametrize("code", CODES)
def test_a_status_code_means_the_same_for_a_provider_a_refiner_and_a_target(server, code, make_request, tmp_path):
    server.status, server.headers = code, {"Retry-After": "7"}
    expected = EXPECTED.get(code, Rejected)
    image = tmp_path / "out.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    item = PublishItem(client="c", name="mug.png", generation_key="k" * 64, image_path=str(image), source_uri="file:///s")

    provider = raised(ReplicateProvider(base_url=server.url, api_key="t", job_dir=str(tmp_path)).submit(make_request()))
    refiners = [raised(ReplicateRefiner(base_url=server.url, api_key="t", prefer_wait_s=0).upscale(b"\x89PNG\r\n\x1a\n")),
                raised(StabilityRefiner(base_url=server.url, api_key="t").outpaint(b"img", b"mask"))]
    targets = [raised(StrapiSite(url=server.url, api_token="t").find_existing(item)),
               raised(WordPressSite(url=server.url, username="u", application_password="p").find_existing(item))]

    assert type(provider) is expected and all(type(r) is expected for r in refiners)
    assert all(isinstance(t, PublishError) for t in targets)
    assert {outcome(e) for e in [provider, *refiners, *targets]} == {
        (expected.retryable, 7.0 if expected is RateLimited else None)}
    assert all(e.status_code == code for e in [provider, *refiners, *targets])
