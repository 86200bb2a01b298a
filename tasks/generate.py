"""Generate: submit a request to the client's provider, wait, and bring the images home.

Waiting is polling on a backoff up to a deadline (a webhook relayed as a
Prefect event can end the wait early; see the providers issue). Outputs are
validated (they decode, there are as many as asked, they are not tiny) and
written to the work folder at once, because hosted providers delete them.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

from PIL import Image
from prefect import task
from prefect.tasks import exponential_backoff

from blocks.providers.base import ImageProvider
from models import GenerationRequest, GenerationResult, JobHandle, JobState, Rejected, Transient
from tasks.retry import retry_transient_only


def validate_outputs(images: list[bytes], request: GenerationRequest, provider: str) -> list[Image.Image]:
    """Decoded outputs; a corrupt, missing or tiny image is a Transient error (a retry may fix it)."""
    if not images:
        raise Transient("provider returned no images", provider=provider)
    if len(images) > request.batch_size:
        images = images[: request.batch_size]
    decoded = []
    for i, data in enumerate(images):
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Exception as exc:  # noqa: BLE001
            raise Transient(f"output {i} does not decode as an image: {exc}", provider=provider) from exc
        if min(img.size) < 32:
            raise Transient(f"output {i} is only {img.width}x{img.height}", provider=provider)
        decoded.append(img)
    return decoded


async def wait_for_job(provider: ImageProvider, handle: JobHandle, *, poll_every: float, deadline_s: float) -> None:
    """Poll until the job finishes or the deadline passes (the job is not lost: its id is in the error)."""
    started = time.monotonic()
    delay = min(0.05, poll_every)
    while True:
        status = await provider.status(handle)
        if status.state == JobState.succeeded:
            return
        if status.state in (JobState.failed, JobState.canceled):
            raise Rejected(status.error or f"job {status.state.value}", provider=provider.provider_name)
        if time.monotonic() - started > deadline_s:
            raise Transient(f"job {handle.job_id} not finished after {deadline_s:.0f}s", provider=provider.provider_name)
        await asyncio.sleep(delay)
        delay = min(delay * 2, poll_every)


@task(
    name="generate-images",
    retries=4,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient_only,
)
async def generate_images(
    request: GenerationRequest,
    provider: ImageProvider,
    out_dir: str,
    poll_every: float = 5.0,
    deadline_s: float = 120.0,
) -> GenerationResult:
    """Run one generation and write its images as PNGs under `out_dir`."""
    started = time.monotonic()
    provider.check_supported(request)
    handle = await provider.submit(request)
    await wait_for_job(provider, handle, poll_every=poll_every, deadline_s=deadline_s)
    images = validate_outputs(await provider.fetch(handle), request, provider.provider_name)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"raw-{i}.png"
        img.save(path, format="PNG")
        paths.append(str(path.resolve()))
    return GenerationResult(
        images=paths, provider=provider.provider_name, model=provider.model, job_ids=[handle.job_id],
        seed=request.seed, cost_usd=round(provider.price_per_image_usd * len(paths), 6),
        seconds=round(time.monotonic() - started, 3),
    )
