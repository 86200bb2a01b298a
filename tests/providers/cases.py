"""One `Case` per provider: its fake, how to build its block against the fake, what it supports.

The conformance suite (test_conformance.py) runs every check against every case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.fakes.base import FakeProvider, Knobs


@dataclass
class Case:
    name: str
    make_fake: Callable[[Knobs], FakeProvider]
    make_block: Callable[[FakeProvider, str | None, Path], Any]  # (fake, webhook_url, tmp_path) -> block
    webhooks: bool
    max_batch: int
    content_filter: str  # words expected in the refusal
    extra: dict[str, Any] = field(default_factory=dict)


def _replicate() -> Case:
    from brandforge.blocks.providers.replicate import ReplicateProvider
    from tests.fakes import replicate as fake

    def block(f, hook, tmp):
        return ReplicateProvider(base_url=f.url, api_key=fake.TOKEN, webhook_url=hook, webhook_secret=fake.WEBHOOK_SECRET,
                                 model="stability-ai/sdxl", request_timeout_s=1.0, job_dir=str(tmp / "jobs"))

    return Case("replicate", fake.FakeReplicate, block, webhooks=True, max_batch=4, content_filter="NSFW")


def _fal() -> Case:
    from brandforge.blocks.providers.fal import FalProvider
    from tests.fakes import fal as fake

    def block(f, hook, tmp):
        return FalProvider(base_url=f.url, api_key=fake.KEY, webhook_url=hook, jwks_url=f"{f.url}/.well-known/jwks.json",
                           model="fal-ai/fast-sdxl/image-to-image", request_timeout_s=1.0, job_dir=str(tmp / "jobs"))

    return Case("fal", fake.FakeFal, block, webhooks=True, max_batch=8, content_filter="content checker")


def _stability() -> Case:
    from brandforge.blocks.providers.stability import StabilityProvider
    from tests.fakes import stability as fake

    def block(f, hook, tmp):
        return StabilityProvider(base_url=f.url, api_key=fake.TOKEN, request_timeout_s=1.0, job_dir=str(tmp / "jobs"))

    return Case("stability", fake.FakeStability, block, webhooks=False, max_batch=1, content_filter="CONTENT_FILTERED")


def _openai() -> Case:
    from brandforge.blocks.providers.openai_images import OpenAIImagesProvider
    from tests.fakes import openai as fake

    def block(f, hook, tmp):
        return OpenAIImagesProvider(base_url=f.url, api_key=fake.TOKEN, request_timeout_s=1.0, job_dir=str(tmp / "jobs"))

    return Case("openai", fake.FakeOpenAI, block, webhooks=False, max_batch=8, content_filter="safety system")


def _leonardo() -> Case:
    from brandforge.blocks.providers.leonardo import LeonardoProvider
    from tests.fakes import leonardo as fake

    def block(f, hook, tmp):
        if hook:
            f.webhook_url = hook  # Leonardo's webhook is set per API key, i.e. on the provider's side
        return LeonardoProvider(base_url=f"{f.url}/api/rest/v1", api_key=fake.TOKEN, model=fake.MODEL_ID, webhook_url=hook,
                                webhook_callback_api_key=fake.CALLBACK_KEY, request_timeout_s=1.0,
                                job_dir=str(tmp / "jobs"))

    return Case("leonardo", fake.FakeLeonardo, block, webhooks=True, max_batch=8, content_filter="content moderation",
                extra={"unsigned": True})


def all_cases() -> list[Case]:
    return [_replicate(), _fal(), _stability(), _openai(), _leonardo()]
