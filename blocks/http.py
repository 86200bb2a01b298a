"""The one HTTP layer of every block that talks to a service: providers, refiners, publish targets.

It owns, once:

- the client setup (`async_client`): timeouts always set (connect quickly, allow
  the answer its time), connection limits, one CA-verifying TLS context, and a
  transport tests can inject (`use_transport`);
- what a status code means (`failure_kind`): 429 → rate limited, 408 and 5xx →
  transient (worth another try), every other 4xx (409 included) → rejected;
- where `Retry-After` is read (`parse_retry_after`);
- the service's own words for a refusal (`reason_from_body`), whatever its error shape,
  summarised (an error page is never copied whole into a recorded reason);
- the SSRF guard (blocks/url_guard.py): every request and every redirect of every client made
  here is checked, pinned to the address it resolved to and size-capped; and credentials
  (`Authorization`, API key headers) go only to the configured API origin (`send(api_origin=…)`).

Providers and refiners get `RateLimited` / `Transient` / `Rejected` (`raise_for_status`,
`send`); targets get a `PublishError` whose `retryable` and `retry_after` say the same
(`publish_error`). Clients are created per call on purpose: an `httpx.AsyncClient` is
bound to the event loop it first ran on, and Prefect may run the same block's methods
on different loops (worker threads, retries).
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import ssl
import time
from typing import Any, Callable, Iterator, Literal
from urllib.parse import urlsplit

import httpx

from brandforge.blocks.url_guard import GuardedSyncTransport, GuardedTransport, UrlPolicy, UrlRefused, parse_host, same_origin
from brandforge.models import PublishError, RateLimited, Rejected, Transient

DEFAULT_TIMEOUT_S = 30.0
LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10)

FailureKind = Literal["rate_limited", "transient", "rejected"]

# Tests may route every client through an in-process transport; None = the network.
_TRANSPORT: httpx.AsyncBaseTransport | None = None


@functools.lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """The CA-verifying TLS context every client shares (loading the CA bundle costs CPU; built once)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def timeout(seconds: float) -> httpx.Timeout:
    """Connect quickly or fail; allow `seconds` for the answer (generation can be slow)."""
    return httpx.Timeout(seconds, connect=min(10.0, seconds))


@contextlib.contextmanager
def use_transport(transport: httpx.AsyncBaseTransport) -> Iterator[None]:
    """Route every client made by `async_client` through `transport` (tests)."""
    global _TRANSPORT
    before, _TRANSPORT = _TRANSPORT, transport
    try:
        yield
    finally:
        _TRANSPORT = before


def async_client(timeout_s: float = DEFAULT_TIMEOUT_S, *, follow_redirects: bool = True, **kwargs: Any) -> httpx.AsyncClient:
    """The client every block uses (base_url, headers, auth … pass through); every request it sends,
    redirects included, passes the URL guard."""
    inner = _TRANSPORT or httpx.AsyncHTTPTransport(verify=tls_context(), limits=LIMITS)
    return httpx.AsyncClient(timeout=timeout(timeout_s), limits=LIMITS, verify=tls_context(), trust_env=False,
                             follow_redirects=follow_redirects, max_redirects=5,
                             transport=GuardedTransport(inner), **kwargs)


def sync_client(timeout_s: float = DEFAULT_TIMEOUT_S, *, ssl_context: ssl.SSLContext | None = None,
                follow_redirects: bool = True, **kwargs: Any) -> httpx.Client:
    """`async_client` for the few synchronous callers (webhook key sets, sources, certificates)."""
    verify = ssl_context or tls_context()
    inner = httpx.HTTPTransport(verify=verify, limits=LIMITS)
    return httpx.Client(timeout=timeout(timeout_s), verify=verify, trust_env=False, follow_redirects=follow_redirects,
                        max_redirects=5, transport=GuardedSyncTransport(inner), **kwargs)


_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-key", "proxy-authorization", "cookie")


def check_credentials(provider: str, url: str, headers: Any, api_origin: str | None) -> None:
    """Refuse to send credentials anywhere but the provider's configured API origin."""
    names = {k.lower() for k in dict(headers or {})}
    if not names & set(_CREDENTIAL_HEADERS):
        return
    if api_origin is None or not same_origin(url, api_origin):
        raise Rejected(f"{provider}: refused to send credentials to {safe_url(url)}: they go only to the configured "
                       f"API origin ({safe_url(api_origin) if api_origin else 'none given'})", provider=provider)


# --------------------------------------------------------------------------- what an answer means


def failure_kind(status: int) -> FailureKind | None:
    """None for a success, else what the status code means to every block alike."""
    if status < 400:
        return None
    if status == 429:
        return "rate_limited"
    if status == 408 or status >= 500:
        return "transient"
    return "rejected"


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
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    if "ratelimit-reset" in h:
        try:
            return max(0.0, float(h["ratelimit-reset"]))
        except ValueError:
            pass
    return None


def reason_from_body(resp: httpx.Response) -> str:
    """The service's own words for a refusal, whatever its error shape, at most 300 characters."""
    return _capped(_printable(_reason_from_body(resp)))


def _reason_from_body(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return summarise_text(resp)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):  # OpenAI {error: {message, code}}, Strapi {error: {name, message}}
            said = " ".join(str(p) for p in (err.get("name"), err.get("message") or err.get("code")) if p)
            return said or json.dumps(err)[:300]
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
        if body.get("code") or body.get("message"):  # WordPress {code, message}
            return " ".join(str(p) for p in (body.get("code"), body.get("message")) if p)
    return json.dumps(body)[:300] or resp.reason_phrase


def summarise_text(resp: httpx.Response) -> str:
    """A non-JSON error body in a few words: an HTML page by its title, text by its first line."""
    ctype = resp.headers.get("content-type", "").split(";")[0].strip() or "unknown type"
    size = len(resp.content)
    text = resp.text
    if "html" in ctype or text.lstrip()[:1] == "<":
        title = ""
        low = text.lower()
        start = low.find("<title>")
        if start >= 0:
            title = text[start + 7: low.find("</title>", start)][:80]
        said = f"HTML page{': ' + _printable(title) if title.strip() else ''}"
    else:
        first = next((line for line in text.splitlines() if line.strip()), "")
        said = _printable(first)[:120] + ("…" if len(first) > 120 or text.count("\n") > 1 else "")
    return f"{said or resp.reason_phrase} ({size} bytes of {ctype})"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text).strip()


def _capped(said: str) -> str:
    return said if len(said) <= 300 else said[:300] + "…"


def safe_url(url: str) -> str:
    """A URL for messages: no query string (it may carry tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# --------------------------------------------------------------------------- providers and refiners


def raise_for_status(resp: httpx.Response, provider: str) -> httpx.Response:
    """Return `resp` when it succeeded, else raise the provider error its status code means."""
    kind = failure_kind(resp.status_code)
    if kind is None:
        return resp
    code, reason = resp.status_code, reason_from_body(resp)
    if kind == "rate_limited":
        raise RateLimited(f"{provider}: {reason}", retry_after=parse_retry_after(resp.headers), provider=provider,
                          status_code=code)
    if kind == "transient":
        raise Transient(f"{provider}: HTTP {code}: {reason}", provider=provider, status_code=code)
    raise Rejected(f"{provider}: HTTP {code}: {reason}", provider=provider, status_code=code)


@contextlib.contextmanager
def transport_errors(provider: str, method: str, url: str, timeout_s: float) -> Iterator[None]:
    """The URL's syntax checked by the guard first (before httpx reads it); then, for sync and async
    callers alike, a refused URL or a redirect loop is `Rejected`, a timeout or dropped connection `Transient`."""
    try:
        parse_host(url, UrlPolicy.from_env())
        yield
    except UrlRefused as exc:
        raise Rejected(f"{provider}: {exc}", provider=provider) from exc
    except httpx.TooManyRedirects as exc:
        raise Rejected(f"{provider}: {method} {safe_url(url)}: too many redirects", provider=provider) from exc
    except httpx.TimeoutException as exc:
        raise Transient(f"{provider}: {method} {safe_url(url)} timed out after {timeout_s:g}s", provider=provider) from exc
    except httpx.TransportError as exc:
        raise Transient(f"{provider}: {method} {safe_url(url)} failed: {type(exc).__name__}", provider=provider) from exc


async def send(
    provider: str,
    method: str,
    url: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ok: Callable[[httpx.Response], bool] | None = None,
    api_origin: str | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One HTTP exchange with a provider or refiner service, transport failures mapped to `Transient`,
    a URL the guard refuses to `Rejected`. Credential headers go only to `api_origin`."""
    check_credentials(provider, url, kwargs.get("headers"), api_origin)
    with transport_errors(provider, method, url, timeout_s):
        async with async_client(timeout_s) as client:
            resp = await client.request(method, url, **kwargs)
    if ok is not None and ok(resp):
        return resp
    return raise_for_status(resp, provider)


def send_sync(provider: str, method: str, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
              api_origin: str | None = None, **kwargs: Any) -> httpx.Response:
    """`send` for the few synchronous callers (a webhook check reading a key set), same mapping."""
    check_credentials(provider, url, kwargs.get("headers"), api_origin)
    with transport_errors(provider, method, url, timeout_s):
        with sync_client(timeout_s) as client:
            resp = client.request(method, url, **kwargs)
    return raise_for_status(resp, provider)


def json_of(resp: httpx.Response, provider: str) -> Any:
    """The body as JSON; a malformed body (truncated, HTML error page) is a retryable fault."""
    try:
        return resp.json()
    except ValueError as exc:
        raise Transient(f"{provider}: malformed JSON in a {resp.status_code} answer", provider=provider) from exc


# --------------------------------------------------------------------------- publish targets

# What a person should check for each refusal that no retry can fix.
_HINTS = {
    401: "the credentials were not accepted; check the user name and password/token",
    403: "the credentials lack the permission for this; check the user's role or the token's scope",
    404: "not found; check the site address and the content type",
    413: "the file is larger than the server accepts; raise its upload limit or publish a smaller image",
}


def publish_error(target: str, what: str, resp: httpx.Response, *, retryable: bool | None = None,
                  hint: str | None = None) -> PublishError:
    """The `PublishError` an error answer means: retryable exactly when a provider's would be."""
    status = resp.status_code
    hint = hint or _HINTS.get(status, "")
    reason = f"{target} answered {status} to {what}: {reason_from_body(resp)}" + (f" ({hint})" if hint else "")
    kind = failure_kind(status)
    return PublishError(reason, retryable=kind in ("rate_limited", "transient") if retryable is None else retryable,
                        status_code=status, retry_after=parse_retry_after(resp.headers) if kind == "rate_limited" else None)


def publish_transport_error(target: str, what: str, url: str, exc: httpx.TransportError, timeout_s: float) -> PublishError:
    """A target that could not be reached or did not answer in time: worth another try."""
    if isinstance(exc, httpx.TimeoutException):
        reason = f"{target} at {url} did not answer {what} within {timeout_s:g} s"
    else:
        reason = f"{target} at {url} could not be reached for {what}: {type(exc).__name__}: {exc}"
    return PublishError(reason, retryable=True)
