"""Fixtures for the provider conformance suite: a source image, running fakes, a webhook sink."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from brandforge.models import PARAM_NAMES, GenerationRequest
from tests.fakes.base import Served, WebhookSink


@pytest.fixture
def source_png(tmp_path: Path) -> Path:
    """A 96×64 gradient: small, decodable, not square (catches swapped width/height)."""
    img = Image.new("RGB", (96, 64))
    img.putdata([(x * 2, y * 3, 128) for y in range(64) for x in range(96)])
    path = tmp_path / "source.png"
    img.save(path)
    return path


@pytest.fixture
def make_request(source_png: Path):
    """A request as the pipeline builds it: the overrides are what the recipe set (explicit); the rest
    carry the contract's defaults, and the seed is a derived one (not explicit)."""
    def build(**overrides) -> GenerationRequest:
        fields = dict(source_image=f"file://{source_png}", prompt="watercolour of a red mug", negative_prompt="blurry",
                      seed=1234)
        fields.update(overrides)
        explicit = tuple(k for k in overrides if k in PARAM_NAMES)
        return GenerationRequest(**fields, explicit=explicit)

    return build


@pytest.fixture
def webhook_sink():
    sink = WebhookSink()
    with Served(sink.app) as served:
        sink.url = served.url
        yield sink


@pytest.fixture
def provider(request, tmp_path):
    """(fake, block) for the provider named by indirect parametrization, its fake running."""
    from tests.fakes.base import Knobs, serve
    from tests.providers.cases import all_cases

    case = {c.name: c for c in all_cases()}[request.param]
    fake = case.make_fake(Knobs(latency_s=0.02))
    with serve(fake):
        yield fake, case.make_block(fake, None, tmp_path)
