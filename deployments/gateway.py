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

`GET /preview?path=…&expires=…&sig=…` serves a thumbnail (long side ≤ 512 px, cached
under `<state>/previews`) of an output or a quarantined variant to whoever holds
a signed link from `tasks.previews.preview_url` — what the run's artifacts and
the review form show; a forged, altered or expired link, or a file outside the
work, quarantine and gallery roots, gets 403.

`POST /assets/{client}` takes a client's new-asset notifications — an S3 event
notification (plain, SNS- or SQS-wrapped, or from EventBridge), a Strapi v4/v5
webhook, or a CMS hook's `{"uri": …, "name": …}` with the client's bearer token
(`ClientProfile.webhook_token`); or a signed SNS message of a topic the profile
lists (blocks/sns.py) — and emits `brandforge.asset.created`, which starts the
`process-asset/on-new-asset` deployment. A Strapi `entry.unpublish` / `entry.delete`
of a configured collection instead runs the `withdraw` flow (flows/withdraw.py) and
waits for it: what brandforge published for the entry's media is unpublished or
deleted at the target, its ledger rows marked `withdrawn`, and the answer lists them.

`POST /buckets/{name}` takes the S3 notifications (plain, SNS, SQS, EventBridge) of a
bucket several clients share (a `SharedBucket` block of that name: its bearer token or
SNS topics): each object's client is the longest matching key prefix of the block's map,
else the object's `brandforge-client` tag (read with boto3); an object whose client
cannot be told refuses the whole delivery (422, naming why), before anything is emitted.

Every answer is honest: a body over the cap is refused while it streams (413),
before any authentication work; an unknown client gets exactly what a wrong
token gets (401); malformed JSON 400; a shape the gateway does not know 422
naming what it expected; a well-formed delivery that starts nothing (a test
event, a deletion, an unconfigured collection) 200 `ignored` with the reason.
Every source is checked (URL guard, the client's own storage root, name rules)
before anything is emitted; nothing unexpected escapes as a 500.

    uvicorn deployments.gateway:app_from_env --factory --port 8700
    # BRANDFORGE_GATEWAY_PROVIDERS="replicate=brandforge-replicate/acme,fal=brandforge-fal/acme"
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Awaitable, Callable
from urllib.parse import unquote_plus, urljoin

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from prefect.filesystems import LocalFileSystem
from prefect_aws import S3Bucket

from brandforge.blocks.providers.base import ImageProvider
from brandforge.blocks.client_profile import ClientProfile
from brandforge.blocks.sns import MESSAGE_TYPES as SNS_MESSAGE_TYPES
from brandforge.blocks.sns import SnsRejected, SnsVerifier, topic_allowed
from brandforge.blocks.triggers import (
    STRAPI_ENTRY_EVENTS,
    STRAPI_EVENTS,
    STRAPI_WITHDRAW_EVENTS,
    SharedBucket,
    SnsSettings,
    StrapiTrigger,
)
from brandforge.blocks.url_guard import UrlPolicy, UrlRefused, check_url_form, local_path_under
from brandforge.models import (
    ASSET_CREATED_EVENT,
    GENERATION_COMPLETED_EVENT,
    GENERATION_FAILED_EVENT,
    AssetRef,
    JobEvent,
    JobState,
    ProviderError,
    PublishError,
    name_problem,
    stable_hash,
)
from brandforge.tasks.previews import PreviewRefused, cached_thumbnail, check_preview, thumbnail_size

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

    def forget(self, key: str) -> None:
        """Undo `first_time` for a delivery that could not be published (its retry must go through)."""
        with self._lock:
            self._seen.pop(key, None)


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
    """A notification the gateway cannot turn into assets: 422, with this message naming what was expected."""


class Ignored(Exception):
    """A well-formed notification that starts nothing (a test event, a deletion, an unconfigured collection)."""


EXPECTED = ("an S3 event notification {\"Records\": [...]}, an SQS message batch of them, an EventBridge S3 event, "
            "a signed SNS message, a Strapi webhook {\"event\", \"model\", \"entry\"|\"media\"} or {\"uri\", \"name\"}")


def _field(obj: Any, *path: str) -> Any:
    """obj[path…], or BadNotification naming the missing or mistyped field."""
    for i, key in enumerate(path):
        if not isinstance(obj, dict) or key not in obj:
            raise BadNotification(f"expected field {'.'.join(path[:i + 1])!r} in the notification")
        obj = obj[key]
    return obj


def _text(obj: Any, *path: str) -> str:
    value = _field(obj, *path)
    if not isinstance(value, str) or not value:
        raise BadNotification(f"field {'.'.join(path)!r} must be a non-empty string")
    return value


def _version(*parts: Any) -> str:
    """The dedupe tag of one object event: version id and sequencer (a new version or a re-upload after a
    delete is new even with the same bytes), the ETag only as a last resort."""
    return "|".join(str(p) for p in parts if p not in (None, ""))


def _json_string(text: Any, what: str) -> Any:
    if not isinstance(text, str):
        raise BadNotification(f"{what} must be a JSON string")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadNotification(f"{what} is not JSON: {exc.msg}") from exc


def _s3_records(body: Any, *, depth: int = 0) -> list[tuple[str, str, str]]:
    """(bucket, key, version) of every object-created record: S3, SNS- or SQS-wrapped S3, or EventBridge."""
    if depth > 3 or not isinstance(body, dict):
        raise BadNotification(f"expected {EXPECTED}")
    if body.get("Type") == "Notification" and "Message" in body:  # an SNS envelope (inside an SQS body)
        return _s3_records(_json_string(body["Message"], "SNS Message"), depth=depth + 1)
    if body.get("Event") == "s3:TestEvent":
        raise Ignored("s3:TestEvent (sent when notifications are set up)")
    if body.get("source") == "aws.s3" and "detail" in body:  # EventBridge
        if body.get("detail-type") != "Object Created":
            raise Ignored(f"EventBridge {body.get('detail-type')!r}: only 'Object Created' starts a run")
        d = _field(body, "detail")
        obj = _field(d, "object")
        return [(_text(d, "bucket", "name"), _text(obj, "key"),
                 _version(obj.get("version-id"), obj.get("sequencer"), obj.get("etag")))]
    records = body.get("Records")
    if not isinstance(records, list):
        raise BadNotification(f"expected {EXPECTED}")
    found = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadNotification(f"Records[{i}] must be an object")
        if "body" in record and ("eventSource" not in record or record.get("eventSource") == "aws:sqs"):  # SQS
            inner = _json_string(record["body"], f"Records[{i}].body")
            try:
                found.extend(_s3_records(inner, depth=depth + 1))
            except Ignored:
                continue
            continue
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue  # deletions, restores: nothing to make
        obj = _field(record, "s3", "object")
        key = unquote_plus(_text(obj, "key"))
        found.append((_text(record, "s3", "bucket", "name"), key,
                      _version(obj.get("versionId"), obj.get("sequencer"), obj.get("eTag"))))
    if not found and records and all(isinstance(r, dict) for r in records):
        names = {str(r.get("eventName", "SQS message")) for r in records}
        raise Ignored(f"no object-created record ({', '.join(sorted(names))})")
    return found


def _s3_assets(records: list[tuple[str, str, str]], profile: ClientProfile) -> list[tuple[AssetRef, str]]:
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


def _strapi_media(media: Any, base_url: str, what: str) -> list[tuple[str, str, str]]:
    """(absolute url, name, version) of the images in a Strapi media value (one file or a list)."""
    files = media if isinstance(media, list) else [media]
    found = []
    for f in files:
        if f is None:
            continue
        if not isinstance(f, dict):
            raise BadNotification(f"{what} must be a media object (or a list of them) with url and mime")
        url, mime = _text(f, "url"), str(f.get("mime") or "")
        if not mime.startswith("image/"):
            continue
        found.append((urljoin(base_url.rstrip("/") + "/", url), str(f.get("name") or url.rsplit("/", 1)[-1]),
                      _version(f.get("hash"), f.get("updatedAt"), f.get("id"))))
    return found


def _strapi_entry_media(body: dict, settings: StrapiTrigger) -> tuple[Any, dict, str, list[tuple[str, str, str]]]:
    """(model, entry, media field, images) of an entry event of a configured collection; Ignored otherwise."""
    event, model, uid = body.get("event"), body.get("model"), body.get("uid")
    field = settings.collections.get(str(model)) or settings.collections.get(str(uid))
    if field is None:
        raise Ignored(f"{event} of collection {model!r} is not configured (configured: {sorted(settings.collections)})")
    entry = _field(body, "entry")
    if not isinstance(entry, dict):
        raise BadNotification("Strapi 'entry' must be an object")
    return model, entry, field, _strapi_media(entry.get(field), settings.base_url, f"entry.{field}")


def _strapi_assets(body: dict, profile: ClientProfile) -> list[tuple[AssetRef, str]]:
    event = body.get("event")
    if event not in STRAPI_EVENTS:
        raise BadNotification(f"Strapi event must be one of {', '.join(STRAPI_EVENTS)} (got {event!r})")
    settings = profile.strapi
    if settings is None:
        raise BadNotification(f"client {profile.client_id!r} has no Strapi trigger configured (profile field 'strapi')")
    if event in STRAPI_ENTRY_EVENTS:
        model, entry, field, media = _strapi_entry_media(body, settings)
        if not media:
            raise Ignored(f"entry {entry.get('id')!r} of {model!r} has no image in field {field!r}")
    elif event == "media.create":
        if not settings.media_uploads:
            raise Ignored("media.create does not start runs for this client (strapi.media_uploads is off)")
        media = _strapi_media(_field(body, "media"), settings.base_url, "media")
        if not media:
            raise Ignored("the uploaded file is not an image")
    else:
        raise Ignored(f"{event} starts no run")
    record = strapi_record(body)
    return [(StrapiAsset(client=profile.client_id, uri=url, name=name, record=record), version)
            for url, name, version in media]


def _is_strapi(body: Any) -> bool:
    return (isinstance(body, dict) and "uri" not in body and body.get("source") != "wordpress"
            and isinstance(body.get("event"), str) and ("entry" in body or "media" in body or "model" in body))


def strapi_withdrawal(body: Any, profile: ClientProfile) -> tuple[list[str], str, bool] | None:
    """(source URIs, reason, delete) for a Strapi entry.unpublish / entry.delete of a configured collection;
    None for any other notification. The sources are the entry's media, as its runs recorded them."""
    if not _is_strapi(body) or body.get("event") not in STRAPI_WITHDRAW_EVENTS:
        return None
    event, settings = body["event"], profile.strapi
    if settings is None:
        raise BadNotification(f"client {profile.client_id!r} has no Strapi trigger configured (profile field 'strapi')")
    model, entry, field, media = _strapi_entry_media(body, settings)
    sources = [url for url, _, _ in media]
    ref = entry.get("documentId") or entry.get("id")
    if not sources:
        raise Ignored(f"{event}: entry {ref!r} of {model!r} names no image in field {field!r}: nothing to withdraw")
    return sources, f"Strapi {event} of {model} entry {str(ref)[:64]}", event == "entry.delete"


def _default_withdraw(profile: ClientProfile, sources: list[str], reason: str, delete: bool) -> list:
    from brandforge.flows.withdraw import run_withdrawal

    return run_withdrawal(profile, sources, reason, delete)


def _wordpress_assets(body: dict, profile: ClientProfile) -> list[tuple[AssetRef, str]]:
    """The image a WordPress site announced (scripts/wordpress/brandforge-trigger.php): a media upload or a
    product's featured image; the post and product travel along as the asset's record."""
    event = body.get("event")
    if event not in ("media.create", "product.save"):
        raise BadNotification(f"WordPress event must be media.create or product.save (got {event!r})")
    attachment = _field(body, "attachment")
    url = _text(attachment, "url")
    if not str(attachment.get("mime", "")).startswith("image/"):
        raise Ignored("the upload is not an image")
    record: dict[str, Any] = {"event": event, "site": str(body.get("site", ""))[:200],
                              "attachment_id": attachment.get("id"), "title": str(attachment.get("title", ""))[:200]}
    if attachment.get("parent"):
        record["parent_id"] = attachment["parent"]
    product = body.get("product")
    if isinstance(product, dict):
        record.update(product_id=product.get("id"), product_title=str(product.get("title", ""))[:200],
                      sku=str(product.get("sku", ""))[:80])
    name = unquote_plus(url.split("?", 1)[0].rsplit("/", 1)[-1]) or "image"
    asset = StrapiAsset(client=profile.client_id, uri=url, name=name, record=record)
    return [(asset, _version(attachment.get("id"), url))]


class StrapiAsset(AssetRef):
    """An asset announced by a CMS (Strapi, WordPress), with the entry it belongs to (carried in the event)."""

    record: dict[str, Any] = {}


RECORD_FIELDS = ("title", "name", "category", "locale", "tags", "slug", "sku")


def strapi_record(body: dict) -> dict[str, Any]:
    """The entry as the asset's record: collection, ids and a few descriptive fields (strings, capped)."""
    entry = body.get("entry") if isinstance(body.get("entry"), dict) else {}
    record: dict[str, Any] = {"event": body.get("event"), "collection": body.get("model") or "upload"}
    for key in ("id", "documentId"):
        if isinstance(entry.get(key), (int, str)):
            record[key] = entry[key]
    for key in RECORD_FIELDS:
        value = entry.get(key)
        if isinstance(value, dict):  # a relation (category) as its name or title
            value = value.get("name") or value.get("title")
        if isinstance(value, list):  # tags: names of related rows or plain strings
            value = [str(v.get("name") if isinstance(v, dict) else v)[:80] for v in value][:20]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = str(value)[:200]
        if value not in (None, "", []):
            record[key] = value
    return record


def assets_from_notification(body: Any, profile: ClientProfile) -> list[tuple[AssetRef, str]]:
    """The assets a bearer-authenticated notification announces, each with a version tag for de-duplication.

    S3 objects must lie in the client's source bucket (and folder); their `name` is the key
    relative to that folder, as `catalog_refresh` lists them. A Strapi webhook names an entry's
    media; a CMS hook sends `uri` and `name` itself. Raises BadNotification (422) or Ignored (200).
    """
    if not isinstance(body, dict):
        raise BadNotification(f"body must be a JSON object: {EXPECTED}")
    if "uri" in body:
        uri = body["uri"]
        if not isinstance(uri, str) or not uri.startswith(("s3://", "file://", "http://", "https://")):
            raise BadNotification(f"uri must be an s3://, file://, http:// or https:// URI string (got {str(uri)[:100]!r})")
        name = body.get("name") or uri.rsplit("/", 1)[-1]
        if not isinstance(name, str):
            raise BadNotification("name must be a string")
        return [(AssetRef(client=profile.client_id, uri=uri, name=name), str(body.get("version", "")))]
    if body.get("source") == "wordpress":
        return _wordpress_assets(body, profile)
    if _is_strapi(body):
        return _strapi_assets(body, profile)
    return _s3_assets(_s3_records(body), profile)


def check_source_uri(asset: AssetRef, profile: ClientProfile) -> None:
    """Refuse, before anything is emitted, a source the run would refuse: a file:// path outside the client's
    own storage root, an http(s) URL the URL guard does not follow, an s3:// object of another bucket."""
    scheme = asset.uri.split(":", 1)[0].lower()
    source = profile.source
    if scheme == "file":
        local_path_under(asset.uri, source.basepath if isinstance(source, LocalFileSystem) else None)
    elif scheme in ("http", "https"):
        # The client's own allow-list too (only its own); names are resolved and checked again when the run fetches.
        check_url_form(asset.uri, UrlPolicy.from_env(profile.url_allow))
    elif scheme == "s3":
        bucket = asset.uri[len("s3://"):].split("/", 1)[0]
        if not isinstance(source, S3Bucket) or bucket != source.bucket_name:
            raise UrlRefused(asset.uri, f"it is not in client {profile.client_id!r}'s source bucket")
    problem = name_problem(asset.name)
    if problem:
        raise BadNotification(f"asset name refused: {problem}")


def asset_event(asset: AssetRef, version: str) -> dict:
    """`brandforge.asset.created` for one asset; the id is stable per object version (deliveries repeat).
    A CMS asset's payload also carries its entry (`record`: collection, ids, title, category, locale, tags)."""
    key = stable_hash({"uri": asset.uri, "version": version})[:16]
    payload: dict[str, Any] = {"uri": asset.uri, "name": asset.name}
    if getattr(asset, "record", None):
        payload["record"] = asset.record  # type: ignore[attr-defined]
    return {
        "event": ASSET_CREATED_EVENT,
        "resource": {"prefect.resource.id": f"brandforge.asset.{asset.client}.{key}", "brandforge.client": asset.client},
        "payload": payload,
        "id": uuid.uuid5(_EVENT_NS, f"asset:{asset.client}:{asset.uri}:{version}"),
    }


def _load_profile(client: str) -> ClientProfile:
    return ClientProfile.load(client)


def _load_bucket(name: str) -> SharedBucket:
    return SharedBucket.load(name)


def clients_of_records(route: SharedBucket, records: list[tuple[str, str, str]]) -> dict[str, list[tuple[str, str, str]]]:
    """A shared bucket's records by client: the longest matching key prefix, else the object's client tag
    (read with boto3). A record whose client cannot be told refuses the whole delivery (BadNotification);
    S3 not answering is a ConnectionError (the sender retries)."""
    from botocore.exceptions import BotoCoreError, ClientError

    found: dict[str, list[tuple[str, str, str]]] = {}
    allowed = route.allowed_clients()
    prefixes = sorted(route.key_prefixes)
    for bucket, key, version in records:
        if bucket != route.bucket:
            raise BadNotification(f"bucket {bucket!r} is not the shared bucket {route.bucket!r}")
        client = route.client_by_prefix(key)
        if client is None:
            if not route.client_tag:
                raise BadNotification(f"object {key[:200]!r}: no key prefix of shared bucket {route.bucket!r} matches "
                                      f"(prefixes: {prefixes}) and client tags are off: its client is unknown")
            try:
                tags = route.object_tags(key)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", "error"))
                if code in ("NoSuchKey", "NoSuchVersion", "NoSuchBucket", "AccessDenied", "404", "403"):
                    raise BadNotification(f"object {key[:200]!r}: its tags could not be read ({code}): its client is "
                                          "unknown") from exc
                raise ConnectionError(f"S3 did not give the tags of {key[:200]!r} ({code}); retry the delivery") from exc
            except BotoCoreError as exc:
                raise ConnectionError(f"S3 could not be asked for the tags of {key[:200]!r} ({type(exc).__name__}); "
                                      "retry the delivery") from exc
            client = tags.get(route.client_tag)
            if client is None:
                raise BadNotification(f"object {key[:200]!r}: no key prefix of shared bucket {route.bucket!r} matches "
                                      f"(prefixes: {prefixes}) and it has no {route.client_tag!r} tag: its client is unknown")
            if client not in allowed:
                raise BadNotification(f"object {key[:200]!r}: its {route.client_tag!r} tag names client {client[:64]!r}, "
                                      f"which shared bucket {route.bucket!r} does not serve (tag_clients)")
        found.setdefault(client, []).append((bucket, key, version))
    return found


def _default_emit(**kwargs) -> None:
    from prefect.events import emit_event

    emit_event(**kwargs)


class TooLarge(Exception):
    pass


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, streamed and refused as soon as it passes `limit` bytes (before any other work)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise TooLarge()
        except ValueError:
            raise TooLarge() from None
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise TooLarge()
    return bytes(data)


SIGNED_HOOK_TOLERANCE_S = 300


def signed_hook_ok(headers: Any, body: bytes, secret: str, now: float | None = None) -> bool:
    """`X-Brandforge-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Brandforge-Timestamp>.<body>")>`, with a
    timestamp no more than 5 minutes off (a captured delivery cannot be replayed later)."""
    timestamp, signature = headers.get("x-brandforge-timestamp", ""), headers.get("x-brandforge-signature", "")
    try:
        if abs((now if now is not None else time.time()) - int(timestamp)) > SIGNED_HOOK_TOLERANCE_S:
            return False
    except ValueError:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature.encode(), expected.encode())


def _answer(code: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=code)


NOT_ACCEPTED = "missing or wrong credentials for this client"


def build_app(providers: dict[str, ImageProvider], *, emit: Callable[..., None] = _default_emit,
              seen: SeenDeliveries | None = None,
              load_profile: Callable[[str], ClientProfile] = _load_profile,
              sns: SnsVerifier | None = None,
              withdraw: Callable[[ClientProfile, list[str], str, bool], list] = _default_withdraw,
              load_bucket: Callable[[str], SharedBucket] = _load_bucket) -> Starlette:
    """The gateway for these provider blocks (keyed by the name used in the callback URL)
    and for every client's asset notifications (profiles loaded by name); `withdraw` runs the
    withdraw flow for a Strapi entry.unpublish / entry.delete."""
    seen = seen or SeenDeliveries()
    sns = sns or SnsVerifier()

    async def profile_or_none(client: str) -> ClientProfile | None:
        try:
            return await run_in_threadpool(load_profile, client)
        except ValueError:
            return None

    async def bucket_or_none(name: str) -> SharedBucket | None:
        try:
            return await run_in_threadpool(load_bucket, name)
        except ValueError:
            return None

    async def emit_assets(assets: list[tuple[AssetRef, str]], profile: ClientProfile) -> JSONResponse:
        return await emit_groups([(assets, profile)])

    async def emit_groups(groups: list[tuple[list[tuple[AssetRef, str]], ClientProfile]], **extra: Any) -> JSONResponse:
        """Emit each client's assets, once every asset of every client passed its client's checks."""
        for assets, profile in groups:
            for asset, _ in assets:
                try:
                    await run_in_threadpool(check_source_uri, asset, profile)
                except UrlRefused as exc:
                    return _answer(422, error=f"source {exc}", emitted=[])
        assets = [pair for group, _ in groups for pair in group]
        events = [(asset, asset_event(asset, version)) for asset, version in assets]
        emitted = []
        for asset, event in events:
            if seen.first_time(str(event["id"])):
                try:
                    await run_in_threadpool(emit, **event)
                except Exception as exc:  # noqa: BLE001 - the sender retries; the id keeps it single
                    seen.forget(str(event["id"]))
                    logger.error("could not emit %s: %s", event["event"], exc)
                    return _answer(503, error="events could not be recorded; retry the delivery", emitted=emitted)
                emitted.append(asset.name)
        return _answer(200, status="ok", assets=[a.name for a, _ in assets], emitted=emitted, **extra)

    async def withdraw_sources(profile: ClientProfile, sources: list[str], reason: str, delete: bool) -> JSONResponse:
        try:
            done = await run_in_threadpool(withdraw, profile, sources, reason, delete)
        except PublishError as exc:
            logger.warning("client %s: withdrawal failed: %s", profile.client_id, exc.reason)
            return _answer(503 if exc.retryable else 502, error=f"the target refused the withdrawal: {exc.reason}",
                           withdrawn=[])
        except Exception as exc:  # noqa: BLE001 - the rows stay published: a repeated delivery withdraws them
            logger.exception("client %s: withdrawal could not be run", profile.client_id)
            return _answer(503, error=f"the withdrawal could not be run ({type(exc).__name__}); retry the delivery",
                           withdrawn=[])
        taken = [{"name": w.name, "published_url": w.published_url, "detail": w.detail} for w in done if w.withdrawn]
        kept = [{"name": w.name, "published_url": w.published_url, "detail": w.detail} for w in done if not w.withdrawn]
        status = "withdrawn" if taken else "nothing to withdraw"
        return _answer(200, status=status, reason=reason, withdrawn=taken, kept=kept)

    async def sns_delivery(client: str, doc: dict) -> JSONResponse:
        profile: ClientProfile | None = None

        async def settings() -> SnsSettings | None:
            nonlocal profile
            profile = await profile_or_none(client)
            return profile.sns if profile else None

        return await signed_sns(client, doc, settings, lambda message: emit_assets(
            _s3_assets(_s3_records(message), profile), profile))  # type: ignore[arg-type]

    async def signed_sns(client: str, doc: dict, settings_of: Callable[[], Awaitable[SnsSettings | None]],
                         notify: Callable[[Any], Awaitable[JSONResponse]]) -> JSONResponse:
        """A signed SNS message for `client` (a client, or a shared bucket): checked, then confirmed,
        recorded, or its S3 event handed to `notify`."""
        try:
            await run_in_threadpool(sns.verify, doc)
        except SnsRejected as exc:
            logger.warning("rejected SNS delivery for %s: %s", client, exc)
            return _answer(401, error=f"SNS signature check failed: {exc}")
        except ConnectionError as exc:
            return _answer(503, error=str(exc))
        settings = await settings_of()
        if settings is None or not topic_allowed(settings, doc.get("TopicArn")):
            # The same answer for an unknown client and an unlisted topic: clients cannot be enumerated.
            return _answer(403, error="this SNS topic is not accepted for this client; list it in the profile's sns.topic_arns")
        kind = doc["Type"]
        if kind == "SubscriptionConfirmation":
            if not settings.confirm_subscriptions:
                logger.warning("SNS subscription of %s to %s awaits confirmation", client, doc.get("TopicArn"))
                return _answer(200, status="pending", action="confirm the subscription in the SNS console or open its "
                               "SubscribeURL, or set sns.confirm_subscriptions in the profile")
            try:
                said = await run_in_threadpool(sns.confirm, doc)
            except SnsRejected as exc:
                return _answer(422, error=str(exc))
            except ConnectionError as exc:
                return _answer(503, error=str(exc))
            logger.info("client %s: %s", client, said)
            return _answer(200, status="confirmed", topic=doc.get("TopicArn"))
        if kind == "UnsubscribeConfirmation":
            logger.warning("client %s: SNS topic %s unsubscribed this endpoint", client, doc.get("TopicArn"))
            return _answer(200, status="recorded", unsubscribed=doc.get("TopicArn"))
        return await notify(_json_string(doc.get("Message"), "SNS Message"))

    async def emit_shared(route: SharedBucket, records: list[tuple[str, str, str]]) -> JSONResponse:
        """A shared bucket's records, each given to the client its key prefix or object tag names."""
        try:
            by_client = await run_in_threadpool(clients_of_records, route, records)
        except ConnectionError as exc:
            return _answer(503, error=str(exc), emitted=[])
        groups = []
        for client, mine in by_client.items():
            profile = await profile_or_none(client)
            if profile is None:
                raise BadNotification(f"client {client!r} of shared bucket {route.bucket!r} has no ClientProfile block")
            groups.append((_s3_assets(mine, profile), profile))
        return await emit_groups(groups, clients={p.client_id: [a.name for a, _ in g] for g, p in groups})

    async def read_notification(request: Request) -> tuple[bytes, Any] | JSONResponse:
        try:
            body = await read_capped(request, MAX_BODY_BYTES)
        except TooLarge:
            return _answer(413, error=f"body larger than {MAX_BODY_BYTES} bytes: not a notification")
        try:
            return body, json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _answer(400, error=f"body is not JSON ({exc}); expected {EXPECTED}")

    def sns_kind(request: Request, doc: Any) -> str | None:
        """'sns' for an SNS message, 'mismatch' when its header and Type disagree, else None."""
        sns_type = request.headers.get("x-amz-sns-message-type")
        if sns_type or (isinstance(doc, dict) and doc.get("Type") in SNS_MESSAGE_TYPES and "Signature" in doc):
            if not isinstance(doc, dict) or doc.get("Type") != (sns_type or doc.get("Type")):
                return "mismatch"
            return "sns"
        return None

    def bearer_ok(request: Request, token: str) -> bool:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        # Compared even for an unknown client or one without a token: the same answer, the same work.
        matches = hmac.compare_digest(given.encode(), (token or f"\x00{uuid.uuid4()}").encode())
        return bool(token) and matches

    async def notification(request: Request, label: str,
                           handle: Callable[[bytes, Any, bool], Awaitable[JSONResponse]]) -> JSONResponse:
        """Read a notification (capped, JSON) and answer honestly whatever `handle(body, doc, is_sns)` makes
        of it: ignored 200, unreadable 422, never a 500."""
        got = await read_notification(request)
        if isinstance(got, JSONResponse):
            return got
        body, doc = got
        try:
            kind = sns_kind(request, doc)
            if kind == "mismatch":
                return _answer(400, error="x-amz-sns-message-type does not match the message's Type")
            return await handle(body, doc, kind == "sns")
        except Ignored as why:
            return _answer(200, status="ignored", reason=str(why), assets=[], emitted=[])
        except BadNotification as exc:
            return _answer(422, error=str(exc), emitted=[])
        except Exception as exc:  # noqa: BLE001 - never a 500: say what could not be read
            logger.exception("unreadable notification for %s", label)
            return _answer(422, error=f"the notification could not be read ({type(exc).__name__}); expected {EXPECTED}",
                           emitted=[])

    async def shared_bucket(request: Request) -> JSONResponse:
        name = request.path_params["name"]

        async def handle(body: bytes, doc: Any, is_sns: bool) -> JSONResponse:
            route = await bucket_or_none(name)
            if is_sns:
                async def settings() -> SnsSettings | None:
                    return route.sns if route else None

                return await signed_sns(f"bucket {name}", doc, settings,
                                        lambda message: emit_shared(route, _s3_records(message)))  # type: ignore[arg-type]
            token = route.webhook_token.get_secret_value() if route and route.webhook_token else ""
            if not bearer_ok(request, token):
                return _answer(401, error=NOT_ACCEPTED)
            return await emit_shared(route, _s3_records(doc))  # type: ignore[arg-type]

        return await notification(request, f"shared bucket {name}", handle)

    async def new_assets(request: Request) -> JSONResponse:
        client = request.path_params["client"]

        async def handle(body: bytes, doc: Any, is_sns: bool) -> JSONResponse:
            if is_sns:
                return await sns_delivery(client, doc)
            profile = await profile_or_none(client)
            token = profile.webhook_token.get_secret_value() if profile and profile.webhook_token else ""
            if "x-brandforge-signature" in request.headers:  # a signed hook (the WordPress plugin)
                if not (token and signed_hook_ok(request.headers, body, token)):
                    return _answer(401, error=NOT_ACCEPTED)
            elif not bearer_ok(request, token):
                return _answer(401, error=NOT_ACCEPTED)
            withdrawal = strapi_withdrawal(doc, profile)
            if withdrawal is not None:
                return await withdraw_sources(profile, *withdrawal)  # type: ignore[arg-type]
            return await emit_assets(assets_from_notification(doc, profile), profile)  # type: ignore[arg-type]

        return await notification(request, client, handle)

    async def webhook(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        provider = providers.get(name)
        if provider is None:
            return JSONResponse({"error": f"unknown provider {name!r}; configured: {', '.join(sorted(providers))}"},
                                status_code=404)
        try:
            body = await read_capped(request, MAX_BODY_BYTES)
        except TooLarge:
            return _answer(413, error=f"body larger than {MAX_BODY_BYTES} bytes: not a callback")
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            # verify_webhook may fetch keys (fal's JWKS) synchronously: keep it off the event loop.
            job = await run_in_threadpool(provider.verify_webhook, headers, body)
        except ProviderError as exc:
            logger.warning("rejected %s webhook: %s", name, exc.reason)
            status = 503 if exc.retryable else 401
            return JSONResponse({"error": exc.reason}, status_code=status)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # signed, but not a job event
            return _answer(422, error=f"a verified {name} callback that is not a job event: {str(exc)[:200] or type(exc).__name__}")
        except Exception as exc:  # noqa: BLE001 - never a 500
            logger.exception("unreadable %s webhook", name)
            return _answer(422, error=f"the callback could not be read ({type(exc).__name__})")
        if not job.state.finished:
            return JSONResponse({"status": "ignored", "reason": f"job is {job.state.value}"})
        event = event_for(provider, job)
        if not seen.first_time(str(event["id"])):
            return JSONResponse({"status": "duplicate", "event_id": str(event["id"])})
        try:
            await run_in_threadpool(emit, **event)
        except Exception as exc:  # noqa: BLE001
            seen.forget(str(event["id"]))
            logger.error("could not emit %s: %s", event["event"], exc)
            return _answer(503, error="the event could not be recorded; retry the delivery")
        logger.info("%s job %s: %s", name, job.job_id, event["event"])
        return JSONResponse({"status": "published", "event": event["event"], "event_id": str(event["id"])})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "providers": sorted(providers)})

    async def preview(request: Request):
        q = request.query_params
        try:
            path = check_preview(q.get("path", ""), q.get("expires", ""), q.get("sig", ""))
            thumb, media = await run_in_threadpool(cached_thumbnail, path, thumbnail_size(q.get("size", "")))
        except PreviewRefused as exc:
            return _answer(exc.status, error=exc.reason)
        except (OSError, ValueError) as exc:  # signed, but not an image Pillow reads
            return _answer(415, error=f"not a readable image ({type(exc).__name__})")
        # The browser may keep it while the link is valid, never past that; nobody else may.
        max_age = max(0, min(3600, int(q["expires"]) - int(time.time())))
        return FileResponse(thumb, media_type=media, headers={"Cache-Control": f"private, max-age={max_age}",
                                                               "X-Content-Type-Options": "nosniff"})

    return Starlette(routes=[Route("/webhooks/{name}", webhook, methods=["POST"]),
                             Route("/assets/{client}", new_assets, methods=["POST"]),
                             Route("/buckets/{name}", shared_bucket, methods=["POST"]),
                             Route("/preview", preview, methods=["GET", "HEAD"]),
                             Route("/health", health, methods=["GET"])])


def app_from_env() -> Starlette:
    """Load the provider blocks named in BRANDFORGE_GATEWAY_PROVIDERS (name=block-slug/block-name, comma-separated)."""
    from prefect.blocks.core import Block

    import brandforge.blocks  # noqa: F401 - registers the provider block classes for Block.load

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
