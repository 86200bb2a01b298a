"""What the hosted provider blocks share beyond the HTTP layer: source images in, outputs out.

The HTTP exchange itself (client setup, status codes → `RateLimited` /
`Transient` / `Rejected`, Retry-After) is `blocks/http.py`, shared with the
refiners and the publish targets.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, ImageOps

from brandforge.blocks.http import send
from brandforge.models import GenerationRequest, Rejected


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


def edge_map(png: bytes) -> bytes:
    """A structure-control reference computed from the source: Canny edges (white on black) as PNG."""
    import cv2
    import numpy as np

    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    edges = cv2.Canny(grey, 100, 200)
    buf = io.BytesIO()
    Image.fromarray(edges).save(buf, format="PNG")
    return buf.getvalue()


def control_reference(request: GenerationRequest, *, provider: str) -> str:
    """The structure-control image as a provider's wire takes it: a remote reference as given; a local one
    (the map the plan computed from the source, or a given file) as a data URI; Canny edges computed now when
    nothing was given. Depth and pose are never computed here: the plan does that with the profile's models."""
    control = request.control
    assert control is not None
    if control.image and is_remote(control.image):
        return control.image
    if control.image:
        return data_uri(read_source(control.image, provider=provider))
    if control.kind == "edges":
        return data_uri(edge_map(prepare_source(request, provider=provider)))
    raise Rejected(f"control: {provider} computes no {control.kind} map from the source itself; the plan computes it "
                   f"with the profile's control_models.{control.kind}, or give control.image (a reference image)",
                   provider=provider)


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
