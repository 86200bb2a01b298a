"""StabilityProvider: image-to-image through Stability AI's v2beta Stable Image API.

Wire format (reference/providers.md §3): `POST /v2beta/stable-image/generate/{sd3|ultra}`
as multipart/form-data (`image`, `prompt`, `strength` — required for
image-to-image, same convention as ours —, `mode=image-to-image` on sd3, `model`,
`seed`, `negative_prompt`, `cfg_scale`, `output_format`); the answer is the image
itself (`Accept: image/*`, with `finish-reason` and `seed` headers) or JSON
(`Accept: application/json`). It is synchronous: `submit` receives the image and
keeps it in the job folder for `fetch`. Requests are capped at 10 MiB;
`finish-reason: CONTENT_FILTERED` and 403 content moderation are refusals.
"""

from __future__ import annotations

import base64
import uuid
from typing import ClassVar, Literal

from pydantic import Field

from blocks.providers.hosted import HostedProvider
from blocks.providers.http import json_of, prepare_source, send
from models import GenerationRequest, JobHandle, JobStatus, Rejected, Transient

MAX_REQUEST_BYTES = 10 * 1024 * 1024
MAX_SEED = 4294967294
_FORM_OVERHEAD = 4096  # multipart boundaries and text fields, generously


class StabilityProvider(HostedProvider):
    """Stability AI v2beta sd3 / ultra image-to-image (synchronous)."""

    _block_type_name = "Brandforge Stability AI"
    _block_type_slug = "brandforge-stability"
    _description = "Image-to-image on Stability AI v2beta (sd3 / ultra), multipart, synchronous."

    provider_name: ClassVar[str] = "stability"
    max_batch_size: ClassVar[int] = 1  # one image per request

    base_url: str = "https://api.stability.ai"
    endpoint: Literal["sd3", "ultra"] = Field("sd3", description="Which v2beta generate endpoint.")
    model: str = Field("sd3.5-large", description="sd3 model (sd3.5-large, sd3.5-large-turbo, sd3.5-medium, …); unused by ultra.")
    accept: Literal["image", "json"] = Field("image", description="Answer as raw image bytes or as JSON with base64.")
    # 150 requests per 10 s.
    requests_per_minute: int = 900
    price_per_image_usd: float = 0.065

    def unsupported_reasons(self) -> dict[str, str]:
        why = {
            "prompt_2": "v2beta takes one prompt",
            "image_guidance_scale": "only InstructPix2Pix pipelines have it",
            "steps": "v2beta chooses its own step count",
        }
        if self.endpoint == "ultra":
            why["guidance_scale"] = "ultra has no cfg_scale"
        if "turbo" in self.model and self.endpoint == "sd3":
            why["negative_prompt"] = "turbo models take no negative prompt"
        return why

    def _fields(self, request: GenerationRequest) -> dict[str, str]:
        fields = {"prompt": request.prompt, "strength": f"{request.strength:g}", "output_format": "png"}
        if self.endpoint == "sd3":
            fields.update(mode="image-to-image", model=self.model, cfg_scale=f"{request.guidance_scale:g}")
        if request.negative_prompt and "negative_prompt" not in self.unsupported_reasons():
            fields["negative_prompt"] = request.negative_prompt
        # Stability reads seed 0 as "random"; ours is always explicit, so keep it in Stability's range.
        fields["seed"] = str(min(request.seed, MAX_SEED)) if request.seed is not None else "0"
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
        self.check_supported(request)
        image, filename, mime = self._image(request)
        url = f"{self.base_url.rstrip('/')}/v2beta/stable-image/generate/{self.endpoint}"
        accept = "image/*" if self.accept == "image" else "application/json"
        resp = await send(self.provider_name, "POST", url, data=self._fields(request),
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

    async def status(self, handle: JobHandle) -> JobStatus:
        return await self.stored_status(handle)

    async def fetch(self, handle: JobHandle) -> list[bytes]:
        return await self.stored_fetch(handle)
