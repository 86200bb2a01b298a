"""What every post-processing step may use beyond its image and parameters.

`ChainContext` carries the chain's seed, the brand (palette, logo), the blocks a
step may call (a refiner, a C2PA signer) and the metadata the encoder embeds.
The helpers here let a step's pure image function reach a refiner block:
resolve which one, run its async method from synchronous code, and move images
as bytes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, TypeVar

from PIL import Image

from brandforge.blocks.client_profile import foreign_block_error, owns_block
from brandforge.models import InvalidInput

T = TypeVar("T")


@dataclass(frozen=True)
class ChainContext:
    """What steps may need beyond the image and their own parameters."""

    seed: int
    client: str | None = None  # whose chain this is: a step may load only this client's or shared blocks
    palette: tuple[str, ...] = ()
    logo_path: str | None = None
    source_path: str | None = None
    output_format: str = "jpeg"
    metadata: dict[str, Any] = field(default_factory=dict)
    refiner: Any = None  # an ImageRefiner block (the client profile's), or None
    c2pa_signer: Any = None  # a C2paSigner block, or None


def load_block(ref: str, client: str | None) -> Any:
    """A saved block named 'block-type-slug/block-name' (the Prefect document name) that `client` may use:
    its own or a shared one (`blocks.client_profile.owns_block`), checked before it is loaded."""
    from prefect.blocks.core import Block

    if "/" not in ref:
        raise InvalidInput(f"refiner must name a saved block as 'block-type-slug/name', such as 'brandforge-replicate-refiner/acme' (got {ref!r})")
    if client is not None and not owns_block(client, ref.split("/", 1)[1]):
        raise InvalidInput(foreign_block_error(client, ref.split("/", 1)[1], "a recipe step"))
    try:
        return Block.load(ref)
    except ValueError as exc:
        raise InvalidInput(f"refiner block {ref!r} could not be loaded: {exc}") from exc


def resolve_refiner(name: str | None, ctx: ChainContext, step: str, capability: str) -> Any:
    """The refiner a step uses — the one its params name, else the context's (the client profile's) —
    checked to offer `capability` ("upscale", "faces" or "outpaint")."""
    refiner = load_block(name, ctx.client) if name else ctx.refiner
    if refiner is None:
        raise InvalidInput(
            f"{step} step needs a refiner: name a saved refiner block in its 'refiner' parameter or set the client profile's refiner"
        )
    offers = getattr(refiner, "offers", None)
    if offers is not None and capability not in offers:
        raise InvalidInput(
            f"{step} step needs a refiner that offers {capability!r}; {type(refiner).__name__} offers {sorted(offers)}"
        )
    return refiner


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous step code, even if this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    # A loop is running here (an async flow calling us directly): use a fresh one on a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()  # type: ignore[arg-type]


def to_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def from_bytes(data: bytes, what: str) -> Image.Image:
    """Decode a refiner's answer; a non-image answer is Transient (another try may fix it)."""
    from brandforge.models import Transient

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001
        raise Transient(f"{what}: the refiner's answer does not decode as an image: {exc}") from exc
