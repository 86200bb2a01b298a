"""The one SSRF guard for every URL brandforge follows (sources, provider answers, outputs, refiners,
certificates, CMS targets).

`check_url` refuses, before any connection, with a reason:

- a scheme other than http/https, user info in the URL, a missing host;
- odd numeric host forms (`0x7f000001`, `2130706433`, `127.1`, `0177.0.0.1`) — only the
  canonical dotted quad is an IPv4 literal here, as in every browser's address bar;
- IPv4-mapped / -compatible / NAT64 / 6to4 / Teredo IPv6 forms (`[::ffff:127.0.0.1]`);
- `localhost`, `*.localhost` and the cloud metadata names;
- a host any of whose resolved addresses is loopback, link-local, private, shared (CGNAT),
  multicast, reserved or unspecified;

unless the host (as written) or the resolved address is allow-listed (`BRANDFORGE_URL_ALLOW`:
comma-separated host names, addresses or CIDR blocks; the tests' fakes on 127.0.0.1 are
allow-listed that way). A name is allow-listed only by its own spelling: allowing
`127.0.0.1` does not allow `localhost` or `0x7f000001`. A client's profile may add its own
entries (`ClientProfile.url_allow`): they apply only inside `client_url_allow(...)`, which a
run (and the gateway, for that client's notifications) enters for that one client.

The host is resolved once and the connection is made to that address (the `Host` header
and TLS SNI/certificate check keep the name), so a DNS answer cannot change between the
check and the connect. `GuardedTransport` / `GuardedSyncTransport` do this for every
request an httpx client sends, so each redirect is checked again, and cap the answer's
size while it streams. The timeout is the client's (always set in blocks/http.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import socket
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterable, Iterator
from urllib.parse import urlsplit

import httpx

ALLOW_ENV = "BRANDFORGE_URL_ALLOW"
MAX_BYTES_ENV = "BRANDFORGE_URL_MAX_BYTES"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
SCHEMES = ("http", "https")
_METADATA_NAMES = {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
_CANONICAL_V4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")
# IPv6 ranges that embed or translate an IPv4 address: a way round the IPv4 policy.
_V6_EMBEDDING = [ipaddress.ip_network(n) for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48",
                                                   "2002::/16", "2001::/32")]


# The allow-list entries of the one client whose work is being done in this context (a run, a task,
# a gateway request); Prefect copies context into task threads, so tasks of the run see it too.
_CLIENT_ALLOW: ContextVar[tuple[str, ...]] = ContextVar("brandforge_client_url_allow", default=())


@contextlib.contextmanager
def client_url_allow(entries: Iterable[str] | None) -> Iterator[None]:
    """Inside this block the guard also accepts one client's allow-list (replacing any other client's)."""
    token = _CLIENT_ALLOW.set(tuple(entries or ()))
    try:
        yield
    finally:
        _CLIENT_ALLOW.reset(token)


def allow_entry_problem(entry: str) -> str | None:
    """Why `entry` cannot be an allow-list entry (a host name, an address or a CIDR block), or None."""
    text = entry.strip().lower().strip("[]") if isinstance(entry, str) else ""
    if not text:
        return "an empty entry"
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        if _CANONICAL_V4.match(text) is None and _NUMERIC_LABEL.match(text.rstrip(".").rsplit(".", 1)[-1]):
            return f"{entry!r} is a non-canonical numeric address"
        if not _HOST_NAME.match(_ascii_host(text)):
            return f"{entry!r} is neither a host name, an IP address nor a CIDR block"
        return None
    if net.prefixlen < (8 if net.version == 4 else 16):
        return f"{entry!r} is wider than a /{8 if net.version == 4 else 16}: it would switch the guard off"
    return None


class UrlRefused(ValueError):
    """A URL the guard will not follow; the message says which rule and what is allowed."""

    def __init__(self, url: str, why: str):
        self.url, self.why = url, why
        super().__init__(f"URL {_shown(url)} refused: {why}")


def _shown(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    shown = f"{parts.scheme}://{host}{parts.path}" if parts.scheme else url
    return shown[:200]


@dataclass(frozen=True)
class UrlPolicy:
    """What may be followed: allow-listed names, addresses and networks; the size cap."""

    allow: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    _names: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _networks: tuple = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        names, networks = set(), []
        for entry in (e.strip().lower().strip("[]") for e in self.allow):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_networks", tuple(networks))

    @classmethod
    def from_env(cls, extra: Iterable[str] = ()) -> "UrlPolicy":
        allow = [e for e in os.environ.get(ALLOW_ENV, "").split(",") if e.strip()] + list(_CLIENT_ALLOW.get()) + list(extra)
        try:
            max_bytes = int(os.environ.get(MAX_BYTES_ENV, "") or DEFAULT_MAX_BYTES)
        except ValueError:
            max_bytes = DEFAULT_MAX_BYTES
        return cls(allow=tuple(allow), max_bytes=max_bytes)

    def name_allowed(self, host: str) -> bool:
        return host.rstrip(".") in self._names

    def address_allowed(self, ip: ipaddress._BaseAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self._networks)


@dataclass(frozen=True)
class Checked:
    """A URL that passed: its host as written and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


def _forbidden_address(ip: ipaddress._BaseAddress) -> str | None:
    """Why this address may not be reached, or None."""
    for attr, what in (("is_loopback", "loopback"), ("is_unspecified", "unspecified")):
        if getattr(ip, attr):
            return f"a {what} address"
    if ip.version == 6 and any(ip in n for n in _V6_EMBEDDING):
        return "an IPv6 form that embeds an IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo)"
    for attr, what in (("is_link_local", "link-local (cloud metadata lives there)"), ("is_multicast", "multicast"),
                       ("is_private", "private"), ("is_reserved", "reserved")):
        if getattr(ip, attr):
            return f"a {what} address"
    if not ip.is_global:
        return "not a public address"
    return None


def _ascii_host(host: str) -> str:
    """An internationalised name in its DNS (IDNA) form; '' when it has none."""
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return ""


def parse_host(url: str, policy: UrlPolicy) -> tuple[str, str, int, ipaddress._BaseAddress | None]:
    """(scheme, host, port, IP literal or None) after the syntax rules; raises UrlRefused."""
    if not isinstance(url, str) or not url:
        raise UrlRefused(str(url), "empty URL")
    if any(ord(c) < 0x21 or c == "\\" for c in url):
        raise UrlRefused(url, "control characters, spaces or backslashes in the URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UrlRefused(url, f"scheme {scheme or '(none)'!r} is not followed; only http and https are")
    if "@" in parts.netloc:
        raise UrlRefused(url, "user info (user@ or user:password@) in the URL is not allowed")
    try:
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UrlRefused(url, f"malformed host or port ({exc})") from exc
    if not host:
        raise UrlRefused(url, "no host")
    literal: ipaddress._BaseAddress | None = None
    if ":" in host:  # only a bracketed IPv6 literal has a colon in the host
        try:
            literal = ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError as exc:
            raise UrlRefused(url, f"malformed IPv6 address {host!r}") from exc
        if "%" in host:
            raise UrlRefused(url, "IPv6 zone identifiers are not allowed")
    elif _CANONICAL_V4.match(host):
        literal = ipaddress.IPv4Address(host)
    elif _NUMERIC_LABEL.match(host.rstrip(".").rsplit(".", 1)[-1]):
        raise UrlRefused(url, f"host {host!r} is a non-canonical numeric address (hex, octal, decimal or short "
                              "form); write addresses as four decimal numbers, such as 203.0.113.7")
    elif not _HOST_NAME.match(_ascii_host(host)):
        raise UrlRefused(url, f"host {host!r} is not a valid host name")
    if literal is None and not policy.name_allowed(host):
        bare = host.rstrip(".")
        if bare == "localhost" or bare.endswith(".localhost"):
            raise UrlRefused(url, f"host {host!r} is this machine (localhost); allow-list it to follow it")
        if bare in _METADATA_NAMES:
            raise UrlRefused(url, f"host {host!r} is a cloud metadata service")
    return scheme, host, port, literal


def _is_literal(host: str, ip: ipaddress._BaseAddress) -> bool:
    try:
        return ipaddress.ip_address(host) == ip
    except ValueError:
        return False


def _vet_addresses(url: str, host: str, addresses: list[str], policy: UrlPolicy) -> str:
    """The first address to connect to, once every resolved address passed; raises UrlRefused."""
    if not addresses:
        raise UrlRefused(url, f"host {host!r} did not resolve")
    named_ok = policy.name_allowed(host)
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        why = _forbidden_address(ip)
        if why and not named_ok and not policy.address_allowed(ip):
            shown = f"{host!r} is" if _is_literal(host, ip) else f"{host!r} resolves to {ip}, which is"
            raise UrlRefused(url, f"host {shown} {why}; allow-list it ({ALLOW_ENV}) to follow it")
    # IPv4 first: a host with a broken IPv6 route still answers; every address passed either way.
    return sorted(addresses, key=lambda a: ":" in a)[0]


def check_url(url: str, policy: UrlPolicy | None = None) -> Checked:
    """Check `url` and resolve its host once (blocking); raises UrlRefused."""
    policy = policy or UrlPolicy.from_env()
    scheme, host, port, literal = parse_host(url, policy)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UrlRefused(url, f"host {host!r} does not resolve ({exc})") from exc
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
    return Checked(url, scheme, host, port, _vet_addresses(url, host, addresses, policy))


def check_url_form(url: str, policy: UrlPolicy | None = None) -> None:
    """The checks that need no DNS (scheme, host syntax, names, literal addresses): for a URL accepted now
    and fetched later (a webhook's source), where the fetch resolves and checks the name again."""
    policy = policy or UrlPolicy.from_env()
    _, host, _, literal = parse_host(url, policy)
    if literal is not None:
        _vet_addresses(url, host, [str(literal)], policy)


async def check_url_async(url: str, policy: UrlPolicy | None = None) -> Checked:
    """`check_url` with the name resolved off the event loop."""
    policy = policy or UrlPolicy.from_env()
    scheme, host, port, literal = parse_host(url, policy)
    if literal is not None:
        return check_url(url, policy)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(url, f"host {host!r} does not resolve ({exc})") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    return Checked(url, scheme, host, port, _vet_addresses(url, host, addresses, policy))


# --------------------------------------------------------------------------- httpx transports


def _pinned(request: httpx.Request, checked: Checked) -> httpx.Request:
    """A copy of `request` sent to the checked address; Host header and TLS name stay the host's
    (the client's own request keeps its URL, so redirects resolve against the name)."""
    headers = httpx.Headers(request.headers)
    headers.setdefault("Host", request.url.netloc.decode("ascii"))
    extensions = dict(request.extensions)
    if checked.scheme == "https":
        extensions["sni_hostname"] = checked.host
    return httpx.Request(request.method, request.url.copy_with(host=checked.address), headers=headers,
                         stream=request.stream, extensions=extensions)


def _too_large(url: str, cap: int) -> UrlRefused:
    return UrlRefused(url, f"the answer is larger than {cap:,} bytes")


def _declared_too_large(response: httpx.Response, cap: int) -> bool:
    try:
        return int(response.headers.get("content-length", "0")) > cap
    except ValueError:
        return False


class _CappedAsyncStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, cap: int, url: str):
        self.inner, self.cap, self.url, self.seen = inner, cap, url, 0

    async def __aiter__(self):
        async for chunk in self.inner:
            self.seen += len(chunk)
            if self.seen > self.cap:
                raise _too_large(self.url, self.cap)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class _CappedSyncStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, cap: int, url: str):
        self.inner, self.cap, self.url, self.seen = inner, cap, url, 0

    def __iter__(self):
        for chunk in self.inner:
            self.seen += len(chunk)
            if self.seen > self.cap:
                raise _too_large(self.url, self.cap)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """Every request checked (redirects too, since the client sends each hop here), pinned to the
    resolved address, its answer size-capped."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None, policy: UrlPolicy | None = None, **kwargs):
        self.inner = inner or httpx.AsyncHTTPTransport(**kwargs)
        self.policy = policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy or UrlPolicy.from_env()
        url = str(request.url)
        checked = await check_url_async(url, policy)
        response = await self.inner.handle_async_request(_pinned(request, checked))
        if _declared_too_large(response, policy.max_bytes):
            await response.aclose()
            raise _too_large(url, policy.max_bytes)
        return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                              stream=_CappedAsyncStream(response.stream, policy.max_bytes, url))  # type: ignore[arg-type]

    async def aclose(self) -> None:
        await self.inner.aclose()


class GuardedSyncTransport(httpx.BaseTransport):
    """`GuardedTransport` for synchronous clients."""

    def __init__(self, inner: httpx.BaseTransport | None = None, policy: UrlPolicy | None = None, **kwargs):
        self.inner = inner or httpx.HTTPTransport(**kwargs)
        self.policy = policy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy or UrlPolicy.from_env()
        url = str(request.url)
        checked = check_url(url, policy)
        response = self.inner.handle_request(_pinned(request, checked))
        if _declared_too_large(response, policy.max_bytes):
            response.close()
            raise _too_large(url, policy.max_bytes)
        return httpx.Response(response.status_code, headers=response.headers, extensions=response.extensions,
                              stream=_CappedSyncStream(response.stream, policy.max_bytes, url))  # type: ignore[arg-type]

    def close(self) -> None:
        self.inner.close()


def same_origin(url: str, origin_of: str) -> bool:
    """True when `url` has the scheme, host and port of `origin_of` (the provider's API root)."""
    a, b = urlsplit(url), urlsplit(origin_of)
    try:
        return (a.scheme.lower(), (a.hostname or "").lower(), a.port or (443 if a.scheme == "https" else 80)) == \
               (b.scheme.lower(), (b.hostname or "").lower(), b.port or (443 if b.scheme == "https" else 80))
    except ValueError:
        return False


def local_path_under(uri: str, basepath: str | None) -> "Path":
    """The file a `file://` URI names, refused unless it lies under `basepath` (symlinks resolved)."""
    from pathlib import Path
    from urllib.parse import unquote

    if not basepath:
        raise UrlRefused(uri, "the client has no local source storage root to read it from (set the profile's "
                              "source to a folder)")
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise UrlRefused(uri, "only local files (file:///path) are read")
    root = Path(basepath).expanduser().resolve()
    path = Path(unquote(parts.path)).resolve()
    if not path.is_relative_to(root):
        raise UrlRefused(uri, f"it is outside the client's source storage root {root}")
    return path
