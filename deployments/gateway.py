"""Webhook gateway: provider callbacks in, Prefect events out.

A small ASGI app (Starlette, installed with Prefect). `POST /webhooks/{name}`
hands the raw body and headers to the named provider block's `verify_webhook`
(signature, token, timestamp — whatever that provider uses); a verified
callback for a finished job becomes the Prefect event
`brandforge.generation.completed` or `.failed` on resource
`brandforge.job.<provider>.<job id>`, which the waiting generation task listens
for. Payloads carry ids and output URIs only — never secrets or image bytes.

Duplicates (providers retry deliveries) are published once: the gateway
remembers recent delivery ids, and the event id is derived from the delivery
(uuid5), so even two gateway replicas emit the same event id, which Prefect
stores once. A forged, tampered or replayed callback gets 401 and emits nothing.

    uvicorn deployments.gateway:app_from_env --factory --port 8700
    # BRANDFORGE_GATEWAY_PROVIDERS="replicate=brandforge-replicate/acme,fal=brandforge-fal/acme"
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import OrderedDict
from typing import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from blocks.providers.base import ImageProvider
from models import JobEvent, JobState, ProviderError

logger = logging.getLogger("brandforge.gateway")

COMPLETED_EVENT = "brandforge.generation.completed"
FAILED_EVENT = "brandforge.generation.failed"
_EVENT_NS = uuid.UUID("5b0d6f0e-8a43-4c8e-9f7e-6f1a2b3c4d5e")
MAX_BODY_BYTES = 1_000_000  # callbacks carry JSON with URLs, never images


class SeenDeliveries:
    """A bounded, thread-safe memory of delivery ids already published."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True


def event_for(provider: ImageProvider, job: JobEvent) -> dict:
    """The Prefect event (as emit_event kwargs) for a verified, finished job."""
    name = COMPLETED_EVENT if job.state == JobState.succeeded else FAILED_EVENT
    delivery = job.delivery_id or f"{job.job_id}:{job.state.value}"
    payload = {"provider": job.provider, "job_id": job.job_id, "state": job.state.value,
               "outputs": [u for u in job.outputs if u.startswith(("http://", "https://"))]}
    if job.error:
        payload["error"] = job.error[:500]
    return {
        "event": name,
        "resource": {"prefect.resource.id": provider.job_resource_id(job.job_id), "brandforge.provider": job.provider},
        "payload": payload,
        "id": uuid.uuid5(_EVENT_NS, f"{job.provider}:{job.job_id}:{job.state.value}:{delivery}"),
    }


def _default_emit(**kwargs) -> None:
    from prefect.events import emit_event

    emit_event(**kwargs)


def build_app(providers: dict[str, ImageProvider], *, emit: Callable[..., None] = _default_emit,
              seen: SeenDeliveries | None = None) -> Starlette:
    """The gateway for these provider blocks, keyed by the name used in the callback URL."""
    seen = seen or SeenDeliveries()

    async def webhook(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        provider = providers.get(name)
        if provider is None:
            return JSONResponse({"error": f"unknown provider {name!r}; configured: {', '.join(sorted(providers))}"},
                                status_code=404)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "body too large for a callback"}, status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            # verify_webhook may fetch keys (fal's JWKS) synchronously: keep it off the event loop.
            job = await run_in_threadpool(provider.verify_webhook, headers, body)
        except ProviderError as exc:
            logger.warning("rejected %s webhook: %s", name, exc.reason)
            status = 503 if exc.retryable else 401
            return JSONResponse({"error": exc.reason}, status_code=status)
        if not job.state.finished:
            return JSONResponse({"status": "ignored", "reason": f"job is {job.state.value}"})
        event = event_for(provider, job)
        if not seen.first_time(str(event["id"])):
            return JSONResponse({"status": "duplicate", "event_id": str(event["id"])})
        await run_in_threadpool(emit, **event)
        logger.info("%s job %s: %s", name, job.job_id, event["event"])
        return JSONResponse({"status": "published", "event": event["event"], "event_id": str(event["id"])})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "providers": sorted(providers)})

    return Starlette(routes=[Route("/webhooks/{name}", webhook, methods=["POST"]),
                             Route("/health", health, methods=["GET"])])


def app_from_env() -> Starlette:
    """Load the provider blocks named in BRANDFORGE_GATEWAY_PROVIDERS (name=block-slug/block-name, comma-separated)."""
    from prefect.blocks.core import Block

    import blocks  # noqa: F401 - registers the provider block classes for Block.load

    spec = os.environ.get("BRANDFORGE_GATEWAY_PROVIDERS", "")
    providers: dict[str, ImageProvider] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, ref = item.partition("=")
        if not ref:
            raise ValueError(f"BRANDFORGE_GATEWAY_PROVIDERS item {item!r} must be name=block-type/block-name")
        providers[name] = Block.load(ref)  # type: ignore[assignment]
    if not providers:
        raise ValueError("BRANDFORGE_GATEWAY_PROVIDERS is empty; e.g. replicate=brandforge-replicate/acme")
    return build_app(providers)
