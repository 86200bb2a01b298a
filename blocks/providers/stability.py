"""StabilityProvider: image-to-image through Stability AI's v2beta Stable Image API.

Wire format (reference/providers.md §3): `POST /v2beta/stable-image/generate/{sd3|ultra}`
as multipart/form-data (`image`, `prompt`, `strength` — required for
image-to-image, same convention as ours —, `mode=image-to-image` on sd3, `model`,
`seed`, `negative_prompt`, `cfg_scale`, `output_format`); the answer is the image
itself (`Accept: image/*`, with `finish-reason` and `seed` headers) or JSON
(`Accept: application/json`). It is synchronous: `submit` receives the image and
keeps it in the job folder for `fetch`. Requests are capped at 10 MiB;
`finish-reason: CONTENT_FILTERED` and 403 content moderation are refusals.

The same block refines: v2beta fast upscale (4×) and inpaint (outpainting through
a mask) for the post-processing chain, through the same plumbing and key.
`StabilityRefiner` is this block under the refiner's saved block type.
"""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any, ClassVar, Literal

from PIL import Image
from pydantic import Field, model_validator

from brandforge.blocks.http import json_of, send
from brandforge.blocks.providers.base import ImageRefiner, Unsupported, Wire, WireMap, at_most, renamed_fields, sniff_mime
from brandforge.blocks.providers.hosted import SynchronousProvider
from brandforge.blocks.providers.http import prepare_source
from brandforge.models import GenerationRequest, JobHandle, Rejected, Transient

MAX_REQUEST_BYTES = 10 * 1024 * 1024
MAX_SEED = 4294967294
_FORM_OVERHEAD = 4096  # multipart boundaries and text fields, generously


class StabilityProvider(SynchronousProvider, ImageRefiner):
    """Stability AI v2beta sd3 / ultra image-to-image (synchronous); also a refiner (upscale, outpaint)."""

    _block_type_name = "Brandforge Stability AI"
    _block_type_slug = "brandforge-stability"
    _description = "Image-to-image on Stability AI v2beta (sd3 / ultra), multipart, synchronous."

    provider_name: ClassVar[str] = "stability"
    refiner_name: ClassVar[str] = "stability"
    offers: ClassVar[frozenset[str]] = frozenset({"upscale", "outpaint"})

    base_url: str = "https://api.stability.ai"
    endpoint: Literal["sd3", "ultra"] = Field("sd3", description="Which v2beta generate endpoint.")
    model: str = Field("sd3.5-large", description="sd3 model (sd3.5-large, sd3.5-large-turbo, sd3.5-medium, …); unused by ultra.")
    accept: Literal["image", "json"] = Field("image", description="Answer as raw image bytes or as JSON with base64.")
    output_format: Literal["png", "jpeg", "webp"] = Field("png", description="Format of refined images.")
    # 150 requests per 10 s.
    requests_per_minute: int = 900
    price_per_image_usd: float = 0.065

    def wire_map(self) -> WireMap:
        turbo = "turbo" in self.model and self.endpoint == "sd3"
        return {
            "prompt_2": Unsupported("v2beta takes one prompt"),
            "negative_prompt": Unsupported("turbo models take no negative prompt") if turbo else Wire("negative_prompt"),
            "guidance_scale": Unsupported("ultra has no cfg_scale") if self.endpoint == "ultra"
            else Wire("cfg_scale", lambda v: f"{v:g}"),
            "image_guidance_scale": Unsupported("only InstructPix2Pix pipelines have it"),
            "strength": Wire("strength", lambda v: f"{v:g}", how="the same convention: 0 = the input, 1 = no image"),
            "steps": Unsupported("v2beta chooses its own step count"),
            "batch_size": Wire(None, at_most(1, "v2beta makes one image per request")),
            # Stability reads seed 0 as "random"; a seed of ours is always explicit, so keep it in range.
            "seed": Wire("seed", lambda v: str(min(v, MAX_SEED))),
            "width": Wire(None, how="the source is resized: image-to-image output follows the input's shape"),
            "height": Wire(None, how="the source is resized: image-to-image output follows the input's shape"),
        }

    def _fields(self, request: GenerationRequest) -> dict[str, str]:
        fields = {"prompt": request.prompt, "output_format": "png", **self.wire_params(request)}
        if self.endpoint == "sd3":
            fields.update(mode="image-to-image", model=self.model)
        return fields

    def _image(self, request: GenerationRequest) -> tuple[bytes, str, str]:
        """The source, re-encoded to fit the 10 MiB request cap (PNG, else JPEG), resized to width/height
        when asked (image-to-image output follows the input's shape; there is no size field)."""
        png = prepare_source(request, provider=self.provider_name, fit_to_request=True)
        if len(png) + _FORM_OVERHEAD <= MAX_REQUEST_BYTES:
            return png, "source.png", "image/png"
        jpeg = prepare_source(request, provider=self.provider_name, fmt="JPEG", fit_to_request=True)
        if len(jpeg) + _FORM_OVERHEAD <= MAX_REQUEST_BYTES:
            return jpeg, "source.jpg", "image/jpeg"
        raise Rejected(f"source_image is {len(jpeg) / 2**20:.1f} MiB even as JPEG; Stability accepts requests of at "
                       "most 10 MiB — downscale the source", provider=self.provider_name)

    async def submit(self, request: GenerationRequest) -> JobHandle:
        fields = self._fields(request)  # refuses what cannot be honoured before the source is encoded
        image, filename, mime = self._image(request)
        url = f"{self.base_url.rstrip('/')}/v2beta/stable-image/generate/{self.endpoint}"
        accept = "image/*" if self.accept == "image" else "application/json"
        resp = await send(self.provider_name, "POST", url, data=fields, api_origin=self.base_url,
                          files={"image": (filename, image, mime)},
                          headers={"Authorization": f"Bearer {self.token()}", "Accept": accept,
                                   "stability-client-id": "brandforge"},
                          timeout_s=self.request_timeout_s)
        if self.accept == "json":
            body = json_of(resp, self.provider_name)
            finish, b64 = body.get("finish_reason"), body.get("image")
            if not isinstance(b64, str):
                raise Transient("stability: JSON answer has no image", provider=self.provider_name)
            data = base64.b64decode(b64)
        else:
            if not resp.headers.get("content-type", "").startswith("image/"):
                raise Transient(f"stability: expected an image, got {resp.headers.get('content-type')!r}",
                                provider=self.provider_name)
            finish, data = resp.headers.get("finish-reason"), resp.content
        if finish == "CONTENT_FILTERED":
            raise Rejected("stability: finish-reason CONTENT_FILTERED (the output was blurred by the content filter)",
                           provider=self.provider_name)
        if finish not in (None, "SUCCESS"):
            raise Transient(f"stability: finish-reason {finish}", provider=self.provider_name)
        job_id = resp.headers.get("x-request-id") or uuid.uuid4().hex
        self.store_job(job_id, [data])
        return JobHandle(provider=self.provider_name, job_id=job_id, extra={"synchronous": True})

    # ------------------------------------------------------------------ the refine capability

    async def _refine(self, path: str, files: dict[str, tuple[str, bytes, str]], data: dict[str, Any]) -> bytes:
        resp = await send(self.provider_name, "POST", f"{self.base_url.rstrip('/')}{path}", files=files, api_origin=self.base_url,
                          data={k: str(v) for k, v in data.items()}, timeout_s=self.request_timeout_s,
                          headers={"Authorization": f"Bearer {self.token()}", "Accept": "image/*",
                                   "stability-client-id": "brandforge"})
        finish = resp.headers.get("finish-reason", "SUCCESS")
        if finish != "SUCCESS":
            raise Rejected(f"stability: finish-reason {finish}", provider=self.provider_name)
        return resp.content

    async def upscale(self, image: bytes, scale: int = 4) -> bytes:
        # The fast upscaler is a fixed 4×; the chain resizes to the exact target afterwards.
        with Image.open(io.BytesIO(image)) as img:
            w, h = img.size
        if not (32 <= min(w, h) and max(w, h) <= 1536 and w * h <= 1_048_576):
            raise Rejected(
                f"stability fast upscale takes 32-1536 px per side and at most 1,048,576 pixels (got {w}x{h}); "
                "put the upscale step before steps that enlarge, or use lanczos / realesrgan-local for large images",
                provider=self.provider_name,
            )
        return await self._refine("/v2beta/stable-image/upscale/fast", {"image": ("image", image, sniff_mime(image))},
                                  {"output_format": self.output_format})

    async def outpaint(self, image: bytes, mask: bytes, prompt: str = "", seed: int | None = None) -> bytes:
        data: dict[str, Any] = {"prompt": prompt or "seamless continuation of the scene", "output_format": self.output_format}
        if seed is not None:
            data["seed"] = seed
        files = {"image": ("image", image, sniff_mime(image)), "mask": ("mask", mask, "image/png")}
        return await self._refine("/v2beta/stable-image/edit/inpaint", files, data)


class StabilityRefiner(StabilityProvider):
    """The Stability block as the post-processing chain's refiner (the saved block type refiners had)."""

    _block_type_name = "Brandforge Stability Refiner"
    _block_type_slug = "brandforge-stability-refiner"
    _description = "Runs Stability's v2beta upscale and inpaint endpoints for the post-processing chain."

    @model_validator(mode="before")
    @classmethod
    def _older_field_names(cls, data: Any) -> Any:
        return renamed_fields(data, {"timeout_s": "request_timeout_s"})
