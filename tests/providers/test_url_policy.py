"""Provider answers name URLs; the provider blocks follow them only under the URL guard, and send
their credentials only to their configured API origin (a server on 127.0.0.1 counts what reaches it)."""

from __future__ import annotations

import asyncio

import pytest

from brandforge.blocks.providers.fal import FalProvider
from brandforge.blocks.providers.http import download
from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.models import JobHandle, Rejected

API = "https://api.provider.example"


def test_replicate_token_never_follows_a_foreign_status_url(internal):
    block = ReplicateProvider(base_url=API, api_key="r8_secret")
    before = len(internal.hits)
    handle = JobHandle(provider="replicate", job_id="p1", status_url=f"{internal.url}/v1/predictions/p1")
    with pytest.raises(Rejected, match="refused to send credentials"):
        asyncio.run(block.status(handle))
    assert len(internal.hits) == before


def test_fal_key_never_follows_a_foreign_status_or_response_url(internal):
    block = FalProvider(base_url=API, api_key="fal-secret")
    handle = JobHandle(provider="fal", job_id="r1", status_url=f"{internal.url}/status", result_url=f"{internal.url}/result")
    before = len(internal.hits)
    with pytest.raises(Rejected, match="refused to send credentials"):
        asyncio.run(block.status(handle))
    with pytest.raises(Rejected, match="refused to send credentials"):
        asyncio.run(block.fetch(handle))
    assert len(internal.hits) == before


@pytest.mark.parametrize("url,why", [("http://169.254.169.254/latest/meta-data/", "link-local"),
                                     ("http://[::ffff:127.0.0.1]/x.png", "embeds an IPv4"),
                                     ("http://localhost/x.png", "localhost"), ("file:///etc/passwd", "scheme")])
def test_output_downloads_follow_the_url_guard_and_carry_no_credentials(internal, url, why):
    with pytest.raises(Rejected, match=why):
        asyncio.run(download("replicate", url))
    data = asyncio.run(download("replicate", f"{internal.url}/image.png"))
    assert data.startswith(b"\x89PNG") and internal.hits[-1]["authorization"] is None
