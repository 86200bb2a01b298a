"""Webhook gateway: provider callbacks and new-asset notifications in, Prefect events out.

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

`POST /assets/{client}` takes a client's new-asset notifications — an S3 event
notification (plain, wrapped in SNS, or from EventBridge) or a CMS hook's
`{"uri": …, "name": …}` — checks the client's bearer token
(`ClientProfile.webhook_token`) and emits `brandforge.asset.created`, which
starts the `process-asset/on-new-asset` deployment.

    uvicorn deployments.gateway:app_from_env --factory --port 8700
    # BRANDFORGE_GATEWAY_PROVIDERS="replicate=brandforge-replicate/acme,fal=brandforge-fal/acme"
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import uuid
from collections import OrderedDict
from typing import Any, Callable
from urllib.parse import unquote_plus

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from blocks.providers.base import ImageProvider
from blocks.client_profile import ClientProfile
from models import (
    ASSET_CREATED_EVENT,
    GENERATION_COMPLETED_EVENT,
    GENERATION_FAILED_EVENT,
    AssetRef,
    JobEvent,
    JobState,
    ProviderError,
    stable_hash,
)

logger = logging.getLogger("brandforge.gateway")

COMPLETED_EVENT = GENERATION_COMPLETED_EVENT
FAILED_EVENT = GENERATION_FAILED_EVENT
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


class BadNotification(ValueError):
    """A notification the gateway cannot turn into assets (400, with this message)."""


def _s3_records(body: dict) -> list[tuple[str, str, str]]:
    """(bucket, key, version) of every object-created record, from S3, SNS-wrapped S3 or EventBridge."""
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):  # SNS envelope
        body = json.loads(body["Message"])
    if body.get("source") == "aws.s3" and "detail" in body:  # EventBridge
        if body.get("detail-type") != "Object Created":
            return []
        d = body["detail"]
        return [(d["bucket"]["name"], d["object"]["key"], str(d["object"].get("etag") or d["object"].get("sequencer") or ""))]
    found = []
    for record in body.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue  # deletions, tests events: nothing to make
        obj = record["s3"]["object"]
        found.append((record["s3"]["bucket"]["name"], unquote_plus(obj["key"]), str(obj.get("eTag") or obj.get("sequencer") or "")))
    return found


def assets_from_notification(body: Any, profile: ClientProfile) -> list[tuple[AssetRef, str]]:
    """The assets a notification announces, each with a version tag for de-duplication.

    S3 objects must lie in the client's source bucket (and folder); their `name` is the key
    relative to that folder, as `catalog_refresh` lists them. A CMS hook sends `uri` and
    `name` itself.
    """
    if not isinstance(body, dict):
        raise BadNotification("body must be a JSON object: an S3 event notification or {\"uri\": …, \"name\": …}")
    if "uri" in body:
        uri, name = str(body["uri"]), str(body.get("name") or body["uri"].rsplit("/", 1)[-1])
        if not uri.startswith(("s3://", "file://", "http://", "https://")):
            raise BadNotification(f"uri must be an s3://, file://, http:// or https:// URI (got {uri!r})")
        return [(AssetRef(client=profile.client_id, uri=uri, name=name), str(body.get("version", "")))]
    try:
        records = _s3_records(body)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise BadNotification(f"not an S3 event notification: missing {exc}") from exc
    source = profile.source
    bucket = getattr(source, "bucket_name", None)
    folder = (getattr(source, "bucket_folder", "") or "").strip("/")
    assets = []
    for record_bucket, key, version in records:
        if record_bucket != bucket:
            raise BadNotification(f"bucket {record_bucket!r} is not client {profile.client_id!r}'s source bucket ({bucket!r})")
        if folder and not key.startswith(folder + "/"):
            continue  # outside the catalog's folder (e.g. the archive)
        name = key[len(folder) + 1:] if folder else key
        if name.startswith(profile.archive_prefix.rstrip("/") + "/"):
            continue  # a source we archived ourselves
        assets.append((AssetRef(client=profile.client_id, uri=f"s3://{record_bucket}/{key}", name=name), version))
    return assets


def asset_event(asset: AssetRef, version: str) -> dict:
    """`brandforge.asset.created` for one asset; the id is stable per object version (deliveries repeat)."""
    key = stable_hash({"uri": asset.uri, "version": version})[:16]
    return {
        "event": ASSET_CREATED_EVENT,
        "resource": {"prefect.resource.id": f"brandforge.asset.{asset.client}.{key}", "brandforge.client": asset.client},
        "payload": {"uri": asset.uri, "name": asset.name},
        "id": uuid.uuid5(_EVENT_NS, f"asset:{asset.client}:{asset.uri}:{version}"),
    }


def _load_profile(client: str) -> ClientProfile:
    return ClientProfile.load(client)


def _default_emit(**kwargs) -> None:
    from prefect.events import emit_event

    emit_event(**kwargs)


def build_app(providers: dict[str, ImageProvider], *, emit: Callable[..., None] = _default_emit,
              seen: SeenDeliveries | None = None,
              load_profile: Callable[[str], ClientProfile] = _load_profile) -> Starlette:
    """The gateway for these provider blocks (keyed by the name used in the callback URL)
    and for every client's asset notifications (profiles loaded by name)."""
    seen = seen or SeenDeliveries()

    async def new_assets(request: Request) -> JSONResponse:
        client = request.path_params["client"]
        try:
            profile = await run_in_threadpool(load_profile, client)
        except ValueError:
            return JSONResponse({"error": f"unknown client {client!r}"}, status_code=404)
        token = profile.webhook_token.get_secret_value() if profile.webhook_token else ""
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not token:
            return JSONResponse({"error": f"client {client!r} has no webhook_token; set one in its profile"}, status_code=403)
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "body too large for a notification"}, status_code=413)
        try:
            assets = assets_from_notification(json.loads(body or b"null"), profile)
        except (BadNotification, json.JSONDecodeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        emitted = []
        for asset, version in assets:
            event = asset_event(asset, version)
            if seen.first_time(str(event["id"])):
                await run_in_threadpool(emit, **event)
                emitted.append(asset.name)
        return JSONResponse({"status": "ok", "assets": [a.name for a, _ in assets], "emitted": emitted})

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
                             Route("/assets/{client}", new_assets, methods=["POST"]),
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
        logger.warning("BRANDFORGE_GATEWAY_PROVIDERS is empty: only asset notifications are relayed")
    return build_app(providers)
