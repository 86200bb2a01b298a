"""HTTP plumbing shared by the hosted provider blocks.

One place maps what a provider answered to the three errors the generation task
understands (models.py): 429 → `RateLimited(retry_after)`, 5xx / 408 / timeouts /
dropped connections / unparseable bodies → `Transient`, any other 4xx →
`Rejected(<the provider's own reason>)`. Blocks call `send()` and never see a raw
transport error.

Clients are created per call on purpose: an `httpx.AsyncClient` is bound to the
event loop it first ran on, and Prefect may run the same block's methods on
different loops (worker threads, retries). A provider call takes seconds, so a
fresh connection per call costs little — but a fresh TLS context per client costs
CPU (loading the CA bundle), so one context is built once and shared.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import io
import json
import ssl
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
from PIL import Image, ImageOps

from models import GenerationRequest, RateLimited, Rejected, Transient

DEFAULT_TIMEOUT_S = 30.0


@functools.lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The CA-verifying TLS context every provider client shares (thread-safe once built)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def timeout(seconds: float) -> httpx.Timeout:
    """Connect quickly or fail; allow `seconds` for the answer (generation can be slow)."""
    return httpx.Timeout(seconds, connect=min(10.0, seconds))


def parse_retry_after(headers: httpx.Headers | dict[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms`, `Retry-After` (seconds or HTTP date) or `ratelimit-reset`."""
    h = {k.lower(): v for k, v in dict(headers).items()}
    if "retry-after-ms" in h:
        try:
            return max(0.0, float(h["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = h.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if value else None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    if "ratelimit-reset" in h:
        try:
            return max(0.0, float(h["ratelimit-reset"]))
        except ValueError:
            pass
    return None


def _reason_from_body(resp: httpx.Response) -> str:
    """The provider's own words for a refusal, whatever its error shape."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
        return text[:300] or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # OpenAI
            return str(err.get("message") or err.get("code") or err)
        if isinstance(err, str):  # Leonardo (Hasura)
            return err
        if isinstance(body.get("errors"), list):  # Stability
            return "; ".join(str(e) for e in body["errors"]) or str(body.get("name", ""))
        detail = body.get("detail")
        if isinstance(detail, list):  # fal / FastAPI validation
            return "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []) if p != 'body')}: {d.get('msg')}" if isinstance(d, dict) else str(d)
                for d in detail
            )
        if detail:  # Replicate
            fields = body.get("invalid_fields")
            if fields:
                return f"{detail}: " + "; ".join(f"{f.get('field')}: {f.get('description')}" for f in fields)
            return str(detail)
    return json.dumps(body)[:300]


def raise_for_status(resp: httpx.Response, provider: str) -> httpx.Response:
    """Return `resp` when it succeeded, else raise the error the status code means."""
    code = resp.status_code
    if code < 400:
        return resp
    reason = _reason_from_body(resp)
    if code == 429:
        raise RateLimited(f"{provider}: {reason}", retry_after=parse_retry_after(resp.headers), provider=provider, status_code=code)
    if code >= 500 or code in (408, 409):
        raise Transient(f"{provider}: HTTP {code}: {reason}", provider=provider, status_code=code)
    raise Rejected(f"{provider}: {reason}", provider=provider, status_code=code)


async def send(
    provider: str,
    method: str,
    url: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ok: Callable[[httpx.Response], bool] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One HTTP exchange with a provider, transport failures mapped to `Transient`."""
    try:
        async with httpx.AsyncClient(timeout=timeout(timeout_s), follow_redirects=True, verify=tls_context()) as client:
            resp = await client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise Transient(f"{provider}: {method} {_safe(url)} timed out after {timeout_s:g}s", provider=provider) from exc
    except httpx.TransportError as exc:
        raise Transient(f"{provider}: {method} {_safe(url)} failed: {type(exc).__name__}", provider=provider) from exc
    if ok is not None and ok(resp):
        return resp
    return raise_for_status(resp, provider)


def json_of(resp: httpx.Response, provider: str) -> Any:
    """The body as JSON; a malformed body (truncated, HTML error page) is a retryable fault."""
    try:
        return resp.json()
    except ValueError as exc:
        raise Transient(f"{provider}: malformed JSON in a {resp.status_code} answer", provider=provider) from exc


def _safe(url: str) -> str:
    """A URL for messages: no query string (it may carry tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# --------------------------------------------------------------------------- source images


def read_source(uri: str, *, provider: str) -> bytes:
    """Bytes of a local source (file:// or a path). Remote URIs are passed by reference by the callers."""
    path = uri.removeprefix("file://")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise Rejected(f"source_image cannot be read: {exc}", provider=provider) from exc


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def prepare_source(request: GenerationRequest, *, provider: str, fmt: str = "PNG", fit_to_request: bool = False) -> bytes:
    """The source re-encoded as `fmt`; resized to the requested width/height when the provider's
    output follows its input size (so width/height are honoured even where there is no field)."""
    data = read_source(request.source_image, provider=provider)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the same thing
        raise Rejected(f"source_image does not decode as an image: {exc}", provider=provider) from exc
    img = img.convert("RGB")
    if fit_to_request and (request.width or request.height):
        w = request.width or round(img.width * request.height / img.height)
        h = request.height or round(img.height * request.width / img.width)
        img = ImageOps.fit(img, (w, h), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def decode_data_uri(uri: str) -> bytes:
    _, _, payload = uri.partition(",")
    return base64.b64decode(payload)


async def download(provider: str, url: str, *, timeout_s: float = 60.0, headers: dict[str, str] | None = None) -> bytes:
    """An output's bytes (data: URIs decoded in place)."""
    if url.startswith("data:"):
        return decode_data_uri(url)
    resp = await send(provider, "GET", url, timeout_s=timeout_s, headers=headers or {})
    return resp.content
