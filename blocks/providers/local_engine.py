"""LocalEngine: an offline, seeded, deterministic image-to-image provider.

It speaks the same protocol as the hosted providers (submit / status / fetch),
so the whole pipeline — rate limits, waiting, ledger, cost — runs on a laptop
with no network and no ML. It honours the contract meaningfully: the prompt's
style words pick a stylisation, `strength` blends source and stylised,
`guidance_scale` sets the style's intensity, `steps` its refinement passes,
`seed` drives every random choice, `batch_size` gives distinct variants and
`width`/`height` resize. Same request → byte-identical PNGs.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image, ImageOps
from pydantic import Field

from brandforge.blocks.providers.base import ImageProvider, Wire, WireMap
from brandforge.blocks.providers.stylise import choose_style
from brandforge.models import GenerationRequest, JobHandle, JobState, JobStatus, Rejected, stable_hash


def _hex_to_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def read_local_uri(uri: str) -> bytes:
    """Bytes of a file:// URI or a plain path (the local engine never touches the network)."""
    path = uri.removeprefix("file://")
    return Path(path).read_bytes()


def render_variant(request: GenerationRequest, source: Image.Image, index: int, palette: list[str]) -> Image.Image:
    """One variant: the pure pixel function behind the engine, usable without Prefect."""
    seed = (request.seed if request.seed is not None else 0) + 7919 * index
    rng = np.random.default_rng(seed)
    img = source.convert("RGB")
    if request.width or request.height:
        w = request.width or round(img.width * request.height / img.height)
        h = request.height or round(img.height * request.width / img.width)
        img = ImageOps.fit(img, (w, h), Image.Resampling.LANCZOS)
    _, style = choose_style(" ".join(filter(None, [request.prompt, request.prompt_2])), request.negative_prompt)
    stylised = style(img, rng, request.guidance_scale, request.steps, [_hex_to_rgb(c) for c in palette])
    return Image.blend(img, stylised.convert("RGB"), request.strength)


class LocalEngine(ImageProvider):
    """Offline, deterministic image-to-image engine (no ML, no network)."""

    _block_type_name = "Brandforge Local Engine"
    _block_type_slug = "brandforge-local-engine"
    _description = "Seeded, deterministic stylisations for demos, tests and benchmarks; no network."

    provider_name: ClassVar[str] = "local"

    model: str = "brandforge-local-v1"
    job_dir: str = Field(".brandforge/jobs", description="Where finished jobs are kept until fetched.")
    palette: list[str] = Field(default_factory=list, description="Colours for the flat illustration style.")

    def wire_map(self) -> WireMap:
        # Every parameter drives the pixels (see render_variant); nothing goes over a wire.
        return {
            "prompt_2": Wire(None, how="its words also pick the style"),
            "negative_prompt": Wire(None, how="its words rule a style out"),
            "guidance_scale": Wire(None, how="the style's intensity"),
            "image_guidance_scale": Wire(None, how="no effect on a stylisation: the source is always the base"),
            "strength": Wire(None, how="the blend of source and stylised image"),
            "steps": Wire(None, how="the style's refinement passes"),
            "batch_size": Wire(None, how="distinct seeded variants"),
            "seed": Wire(None, how="drives every random choice"),
            "width": Wire(None, how="the source is resized"),
            "height": Wire(None, how="the source is resized"),
        }

    def _job_path(self, job_id: str) -> Path:
        return Path(self.job_dir) / job_id

    def job_id_for(self, request: GenerationRequest) -> str:
        return stable_hash({"model": self.model, "palette": self.palette, "request": request.model_dump()})[:24]

    async def submit(self, request: GenerationRequest) -> JobHandle:
        self.check_request(request)
        job_id = self.job_id_for(request)
        folder = self._job_path(job_id)
        if not (folder / "done").exists():
            try:
                source = Image.open(io.BytesIO(read_local_uri(request.source_image)))
                source.load()
            except (OSError, ValueError) as exc:
                raise Rejected(f"source_image cannot be read: {exc}", provider=self.provider_name) from exc
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(request.batch_size):
                render_variant(request, source, i, self.palette).save(folder / f"{i}.png", format="PNG", compress_level=1)
            (folder / "done").write_text(str(request.batch_size))
        return JobHandle(provider=self.provider_name, job_id=job_id)

    async def status(self, handle: JobHandle) -> JobStatus:
        done = self._job_path(handle.job_id) / "done"
        if not done.exists():
            return JobStatus(state=JobState.failed, error=f"unknown job {handle.job_id}")
        return JobStatus(state=JobState.succeeded)

    async def fetch(self, handle: JobHandle) -> list[bytes]:
        folder = self._job_path(handle.job_id)
        count = int((folder / "done").read_text())
        return [(folder / f"{i}.png").read_bytes() for i in range(count)]
