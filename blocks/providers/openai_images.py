"""OpenAIImagesProvider: image edits through OpenAI's `POST /v1/images/edits`.

Wire format (reference/providers.md §4): multipart/form-data with the source as
`image[]`, `prompt`, `model`, `n`, `size`, `quality`, `output_format`,
`input_fidelity`; the answer holds `data[].b64_json` (GPT image models always
answer in base64; dall-e-2 is asked for `response_format=b64_json`). It is
synchronous: `submit` receives the images and keeps them for `fetch`.

What the API lacks is mapped where a faithful mapping exists (`wire_map`):
- strength → `input_fidelity` (below 0.5 = "high": keep the source; else "low");
- negative_prompt and prompt_2 → folded into the prompt text;
- width/height → the nearest `size` the model accepts;
- seed, steps, guidance_scale, image_guidance_scale → no equivalent: a recipe
  that sets one is refused before any call; left unset (a derived seed counts
  as unset), nothing is sent and nothing is said.
"""

from __future__ import annotations

import base64
import io
import uuid
from typing import ClassVar, Literal

from PIL import Image
from pydantic import Field

from brandforge.blocks.http import json_of, send
from brandforge.blocks.providers.base import Unsupported, Wire, WireMap
from brandforge.blocks.providers.hosted import SynchronousProvider
from brandforge.blocks.providers.http import prepare_source
from brandforge.models import GenerationRequest, JobHandle, Transient

FIXED_SIZES = {(1024, 1024): "1024x1024", (1536, 1024): "1536x1024", (1024, 1536): "1024x1536"}


class OpenAIImagesProvider(SynchronousProvider):
    """OpenAI Images edits (gpt-image-*, dall-e-2), synchronous, base64 outputs."""

    _block_type_name = "Brandforge OpenAI Images"
    _block_type_slug = "brandforge-openai-images"
    _description = "Image edits on OpenAI's Images API (/v1/images/edits), b64_json outputs."

    provider_name: ClassVar[str] = "openai"
    base_url: str = "https://api.openai.com"
    model: str = Field("gpt-image-1", description="gpt-image-1, gpt-image-1-mini, gpt-image-1.5, gpt-image-2 or dall-e-2.")
    quality: Literal["auto", "low", "medium", "high"] = "auto"
    organization: str | None = Field(None, description="OpenAI-Organization header, if your key needs one.")
    requests_per_minute: int = 50
    max_concurrent_jobs: int = 4
    price_per_image_usd: float = 0.042

    def wire_map(self) -> WireMap:
        folded = "folded into the prompt text"
        sized = "the nearest size the model accepts"
        return {
            "prompt_2": Wire(None, how=folded),
            "negative_prompt": Wire(None, how=folded),
            "guidance_scale": Unsupported("image edits have no guidance scale"),
            "image_guidance_scale": Unsupported("image edits have no image guidance scale (strength maps to input_fidelity)"),
            # Our strength is a denoise strength; OpenAI only knows how faithfully to keep the input.
            "strength": Unsupported("dall-e-2 has no input_fidelity") if self.model == "dall-e-2"
            else Wire("input_fidelity", lambda v: "high" if v < 0.5 else "low"),
            "steps": Unsupported("image edits have no step count"),
            "batch_size": Wire("n", str),
            "seed": Unsupported("image edits have no seed; outputs are not reproducible"),
            "width": Wire(None, how=sized),
            "height": Wire(None, how=sized),
        }

    def prompt_text(self, request: GenerationRequest) -> str:
        parts = [request.prompt]
        if request.prompt_2:
            parts.append(request.prompt_2)
        text = ". ".join(p.strip().rstrip(".") for p in parts)
        if request.negative_prompt and request.negative_prompt.strip():
            text += f". Avoid: {request.negative_prompt.strip()}"
        return text

    def size_for(self, request: GenerationRequest, source_size: tuple[int, int]) -> str:
        if not (request.width or request.height):
            return "auto"
        w = request.width or round(source_size[0] * request.height / source_size[1])
        h = request.height or round(source_size[1] * request.width / source_size[0])
        if self.model == "gpt-image-2":
            return f"{max(16, round(w / 16) * 16)}x{max(16, round(h / 16) * 16)}"
        if self.model == "dall-e-2":
            return "1024x1024"
        aspect = w / h
        return min(FIXED_SIZES.items(), key=lambda kv: abs(kv[0][0] / kv[0][1] - aspect))[1]

    def fields(self, request: GenerationRequest, source_size: tuple[int, int]) -> dict[str, str]:
        fields = {"prompt": self.prompt_text(request), "model": self.model, "size": self.size_for(request, source_size),
                  **self.wire_params(request)}
        if self.model == "dall-e-2":
            fields["response_format"] = "b64_json"
        else:
            fields["quality"] = self.quality
            fields["output_format"] = "png"
        return fields

    async def submit(self, request: GenerationRequest) -> JobHandle:
        self.wire_params(request)  # refuse what cannot be honoured before the source is encoded
        png = prepare_source(request, provider=self.provider_name)
        size = Image.open(io.BytesIO(png)).size
        headers = {"Authorization": f"Bearer {self.token()}"}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        resp = await send(self.provider_name, "POST", f"{self.base_url.rstrip('/')}/v1/images/edits",
                          data=self.fields(request, size), files=[("image[]", ("source.png", png, "image/png"))],
                          headers=headers, api_origin=self.base_url, timeout_s=self.request_timeout_s)
        body = json_of(resp, self.provider_name)
        try:
            images = [base64.b64decode(item["b64_json"]) for item in body["data"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise Transient(f"openai: answer has no usable data[].b64_json ({exc})", provider=self.provider_name) from exc
        job_id = resp.headers.get("x-request-id") or uuid.uuid4().hex
        self.store_job(job_id, images)
        return JobHandle(provider=self.provider_name, job_id=job_id, extra={"synchronous": True})
