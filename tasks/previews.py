"""Signed preview URLs: the images a run made, visible in the Prefect UI without exposing the disk.

The Prefect UI's markdown (artifacts, the review form) shows images by URL, but
outputs and quarantined variants are files on the worker's machine. The webhook
gateway (deployments/gateway.py, `GET /preview`) serves a small thumbnail of
such a file to whoever holds a short-lived signed link:

    {BRANDFORGE_PUBLIC_URL}/preview?path=<absolute path>&expires=<unix s>&sig=<hex>[&size=192]

`sig` is HMAC-SHA256 over the path and the expiry with the preview secret, so
a link names one file for a limited time (default 1 hour) and cannot be
altered to name another. The gateway serves only files under the preview roots
(the state folder's `work`, `quarantine` and `gallery`, or
`$BRANDFORGE_PREVIEW_ROOTS`), resolved (`..` and symlinks) before the check.

The secret: `$BRANDFORGE_PREVIEW_SECRET`; else the Prefect Secret block named
in `$BRANDFORGE_PREVIEW_SECRET_BLOCK`; else a random one generated on first use
and kept (mode 0600) in `<state>/preview-secret`, which every process on this
machine (the flow runs that sign, the gateway that checks) then shares.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import secrets
import time
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlencode

from PIL import Image, ImageOps

from brandforge.models import AssetOutcome

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8700"  # the gateway's port in the Makefile
DEFAULT_TTL_S = 3600
PREVIEW_PX = 512  # long side of a served thumbnail
SIZES = (96, 192, 256, PREVIEW_PX)  # what `size=` may ask for (unsigned: it can only shrink the image)
ROOT_NAMES = ("work", "quarantine", "gallery")
SECRET_FILE = "preview-secret"


class PreviewRefused(Exception):
    """A preview request the gateway does not serve: `status` 403 (forged, expired, outside the roots) or 404."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def state_dir() -> Path:
    """brandforge's state folder (ledger, work, quarantine, gallery): `$BRANDFORGE_STATE_DIR`, else `./.brandforge`."""
    return Path(os.environ.get("BRANDFORGE_STATE_DIR") or ".brandforge").expanduser().resolve()


def preview_roots() -> list[Path]:
    """The folders previews may come from: `$BRANDFORGE_PREVIEW_ROOTS` (os.pathsep-separated), else the state
    folder's work, quarantine and gallery."""
    spec = os.environ.get("BRANDFORGE_PREVIEW_ROOTS")
    if spec:
        return [Path(p).expanduser().resolve() for p in spec.split(os.pathsep) if p.strip()]
    return [state_dir() / name for name in ROOT_NAMES]


def public_url() -> str:
    return (os.environ.get("BRANDFORGE_PUBLIC_URL") or DEFAULT_PUBLIC_URL).rstrip("/")


def default_ttl_s() -> int:
    return int(os.environ.get("BRANDFORGE_PREVIEW_TTL_S") or DEFAULT_TTL_S)


@lru_cache(maxsize=8)
def _secret(value: str, block: str, folder: str) -> bytes:
    if value:
        return value.encode()
    if block:
        from prefect.blocks.system import Secret

        return str(Secret.load(block).get()).encode()
    path = Path(folder) / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_hex(32).encode()
    try:  # O_EXCL: of two processes generating at once, one writes and both read what it wrote
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        time.sleep(0.05)
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(fresh)
    return fresh


def preview_secret() -> bytes:
    """The signing key (see the module docstring for where it comes from)."""
    return _secret(os.environ.get("BRANDFORGE_PREVIEW_SECRET", ""), os.environ.get("BRANDFORGE_PREVIEW_SECRET_BLOCK", ""),
                   str(state_dir()))


def signature(path: str, expires: int, key: bytes | None = None) -> str:
    message = f"{path}\n{expires}".encode()
    return hmac.new(key if key is not None else preview_secret(), message, hashlib.sha256).hexdigest()


def under_roots(path: str | Path, roots: list[Path] | None = None) -> Path | None:
    """The resolved file when it lies under a preview root (after `..` and symlinks), else None."""
    text = str(path).removeprefix("file://")
    if "\x00" in text or "://" in text or not text:
        return None
    resolved = Path(text).expanduser().resolve()
    for root in roots if roots is not None else preview_roots():
        if resolved.is_relative_to(root):
            return resolved
    return None


def preview_url(path: str | Path, *, ttl_s: int | None = None, size: int = PREVIEW_PX, now: float | None = None) -> str | None:
    """A signed link to `path`'s thumbnail (long side `size`, one of SIZES), valid `ttl_s` seconds (default
    `$BRANDFORGE_PREVIEW_TTL_S` or 1 hour); None for a file outside the preview roots, or missing (the caller
    shows something else)."""
    resolved = under_roots(path)
    if resolved is None or not resolved.is_file():
        return None
    expires = int((now if now is not None else time.time()) + (ttl_s if ttl_s is not None else default_ttl_s()))
    fields: dict[str, object] = {"path": str(resolved), "expires": expires, "sig": signature(str(resolved), expires)}
    if size != PREVIEW_PX:
        fields["size"] = thumbnail_size(size)
    return f"{public_url()}/preview?{urlencode(fields)}"


def thumbnail_size(requested: object) -> int:
    """The largest allowed size not above `requested` (PREVIEW_PX for anything unreadable)."""
    try:
        value = int(requested)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return PREVIEW_PX
    return max([s for s in SIZES if s <= value] or [SIZES[0]])


def check_preview(path: str, expires: str, sig: str, *, now: float | None = None) -> Path:
    """The file a preview request may be served, or PreviewRefused: 403 for a bad or expired signature or a path
    outside the roots (`..`, symlinks out), 404 for a signed file that is gone."""
    try:
        expiry = int(expires)
    except (TypeError, ValueError):
        raise PreviewRefused(403, "missing or malformed expiry") from None
    if not path or not sig or not hmac.compare_digest(sig.encode(), signature(path, expiry).encode()):
        raise PreviewRefused(403, "bad signature")
    if expiry < (now if now is not None else time.time()):
        raise PreviewRefused(403, "link expired")
    if ".." in Path(path).parts or not Path(path).is_absolute():
        raise PreviewRefused(403, "path must be absolute, without '..'")
    resolved = under_roots(path)
    if resolved is None:
        raise PreviewRefused(403, "not under a preview root")
    if not resolved.is_file():
        raise PreviewRefused(404, "no such file")
    return resolved


def thumbnail_bytes(path: str | Path, size: int = PREVIEW_PX, quality: int = 80) -> tuple[bytes, str]:
    """(image bytes, media type): `path` with its long side at most `size`, PNG when it has transparency, else JPEG."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
        img = img.convert("RGBA" if alpha else "RGB")
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if alpha:
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue(), "image/png"
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue(), "image/jpeg"


def cached_thumbnail(path: Path, size: int = PREVIEW_PX, cache_dir: Path | None = None) -> tuple[Path, str]:
    """The thumbnail of `path` from the cache (`<state>/previews`), rendered once per file version and size."""
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_mtime_ns}|{st.st_size}|{size}".encode()).hexdigest()[:32]
    folder = cache_dir or state_dir() / "previews"
    for suffix, media in ((".jpg", "image/jpeg"), (".png", "image/png")):
        hit = folder / f"{key}{suffix}"
        if hit.is_file():
            return hit, media
    data, media = thumbnail_bytes(path, size)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{key}{'.png' if media == 'image/png' else '.jpg'}"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out, media


def data_uri(path: str | Path, size: int) -> str | None:
    """`path` as a small inline data: URI (for files no preview link can reach); None when unreadable."""
    try:
        data, media = thumbnail_bytes(str(path).removeprefix("file://"), size, quality=72)
    except (OSError, ValueError):
        return None
    return f"data:{media};base64," + base64.b64encode(data).decode()


def image_src(uri: str | None, *, size: int = PREVIEW_PX, ttl_s: int | None = None, inline: bool = True) -> str | None:
    """What a markdown image should point at: a signed preview link when the file is under a preview root, else
    (`inline`) a data: URI of a local file `size` px, else None (remote, unreadable, or not inline)."""
    if not uri:
        return None
    path = uri.removeprefix("file://")
    if "://" in path:
        return None
    return preview_url(path, ttl_s=ttl_s, size=size) or (data_uri(path, size) if inline else None)


def markdown_image(uri: str | None, alt: str, *, size: int = PREVIEW_PX, ttl_s: int | None = None, inline: bool = True) -> str:
    """`![alt](src)` for `uri`'s preview, or ''. (Not wrapped in a link: the Prefect UI's markdown shows an image
    inside a link as its raw text.)"""
    src = image_src(uri, size=size, ttl_s=ttl_s, inline=inline)
    if not src:
        return ""
    return f"![{_alt(alt)}]({src})"


def markdown_link(uri: str | None, text: str, *, ttl_s: int | None = None) -> str:
    """`[text](signed link to the 512 px preview)`, or '' for a file no preview link can reach."""
    url = image_src(uri, ttl_s=ttl_s, inline=False)
    return f"[{_alt(text)}]({url})" if url else ""


def _alt(text: str) -> str:
    return text.replace("[", "(").replace("]", ")").replace("|", "/").replace("\n", " ")


def asset_preview(outcome: AssetOutcome, *, size: int = 192, ttl_s: int | None = None) -> str:
    """The catalog table's `preview` cell of one AssetOutcome: its image as a signed thumbnail link (the published
    file when it is local, else its first output), or '' (no data: URIs in table cells)."""
    candidates = []
    if outcome.published_url and outcome.published_url.startswith("file://"):
        candidates.append(outcome.published_url)
    candidates += list(outcome.output_uris)
    for uri in candidates:
        cell = markdown_image(uri, outcome.name, size=size, ttl_s=ttl_s, inline=False)
        if cell:
            return cell
    return ""
