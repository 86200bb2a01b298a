"""LeonardoProvider: image-to-image through Leonardo.ai's REST v1 API.

Wire format (reference/providers.md §5), three steps per job:
1. `POST /init-image {"extension": "png"}` → a presigned S3 form (`fields` is a
   JSON *string*), valid for two minutes;
2. `POST <url>` multipart: every field, then the `file` part — without our
   Authorization header (S3 refuses a second auth mechanism); 204 = stored;
3. `POST /generations` with `modelId`, `init_image_id`, `init_strength`, … →
   `sdGenerationJob.generationId`; poll `GET /generations/{id}`.

`init_strength` is inverted relative to ours (high keeps the source) and limited
to 0.1–0.9, so `init_strength = 1 − strength`; a recipe strength outside 0.1–0.9
is refused before any call, like steps outside 10–60 and guidance below 1. The
webhook is configured once per production API key, not per request; it carries
the key's "webhook callback API key" as a bearer token and no signature, so the
token check (constant-time) and the body's timestamp are all there is to verify.
"""

from __future__ import annotations

import hmac
import io
import json
import time
from typing import Any, ClassVar

from PIL import Image
from pydantic import Field, SecretStr

from brandforge.blocks.http import json_of, send
from brandforge.blocks.providers.base import Unsupported, Wire, WireMap, within
from brandforge.blocks.providers.hosted import HostedProvider
from brandforge.blocks.providers.http import download, prepare_source, read_source
from brandforge.models import GenerationRequest, JobEvent, JobHandle, JobState, JobStatus, Rejected, Transient

_STATES = {"PENDING": JobState.running, "COMPLETE": JobState.succeeded, "FAILED": JobState.failed}


class LeonardoProvider(HostedProvider):
    """Leonardo.ai generations with an uploaded init image; polling and bearer-token webhooks."""

    _block_type_name = "Brandforge Leonardo"
    _block_type_slug = "brandforge-leonardo"
    _description = "Image-to-image on Leonardo.ai (presigned init-image upload, generations, webhooks)."

    provider_name: ClassVar[str] = "leonardo"
    supports_webhooks: ClassVar[bool] = True
    base_url: str = "https://cloud.leonardo.ai/api/rest/v1"
    model: str = Field("b24e16ff-06e3-43eb-8d33-4416c2d75876", description="Leonardo modelId (a UUID).")
    webhook_url: str | None = Field(
        None, description="The gateway URL registered with this API key (Leonardo sets it per key, not per request); "
        "when set, the generation task also listens for the relayed event.")
    webhook_callback_api_key: SecretStr = Field(SecretStr(""), description="The key's webhook callback API key.")
    webhook_tolerance_s: float = Field(300.0, gt=0, description="Oldest webhook timestamp accepted.")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra generation fields (alchemy, presetStyle, …).")
    requests_per_minute: int = 100  # /generations' own limit
    max_concurrent_jobs: int = 10
    price_per_image_usd: float = 0.01

    def wire_map(self) -> WireMap:
        sized = "multiples of 8, 32-1536 px, keeping the asked or the source's shape"
        return {
            "prompt_2": Unsupported("Leonardo takes one prompt"),
            "negative_prompt": Wire("negative_prompt"),
            "guidance_scale": Wire("guidance_scale", within(1, 20, "Leonardo's guidance_scale is 1-20")),
            "image_guidance_scale": Unsupported("only InstructPix2Pix pipelines have it"),
            "strength": Wire("init_strength", within(0.1, 0.9, "Leonardo's init_strength (1 - strength) is 0.1-0.9",
                                                     lambda v: round(1.0 - v, 4)), how="inverted: higher keeps the source"),
            "steps": Wire("num_inference_steps", within(10, 60, "Leonardo's num_inference_steps is 10-60")),
            "batch_size": Wire("num_images"),
            "seed": Wire("seed"),
            "width": Wire(None, how=sized),
            "height": Wire(None, how=sized),
        }

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token()}", "accept": "application/json"}

    def target_size(self, request: GenerationRequest) -> tuple[int, int]:
        """Width/height Leonardo accepts (multiples of 8, 32–1536), keeping the asked or the source's shape."""
        if request.width and request.height:
            w, h = request.width, request.height
        else:
            src = Image.open(io.BytesIO(read_source(request.source_image, provider=self.provider_name)))
            w, h = src.size
            if request.width:
                w, h = request.width, round(h * request.width / w)
            elif request.height:
                w, h = round(w * request.height / h), request.height
        scale = min(1.0, 1536 / max(w, h))
        return (max(32, int(w * scale) // 8 * 8), max(32, int(h * scale) // 8 * 8))

    def generation_body(self, request: GenerationRequest, init_image_id: str, size: tuple[int, int]) -> dict[str, Any]:
        if request.batch_size > 4 and max(size) > 768:
            raise Rejected(f"batch_size must be at most 4 on Leonardo when a side is over 768 px (got {request.batch_size} "
                           f"at {size[0]}x{size[1]})", provider=self.provider_name)
        body: dict[str, Any] = {"prompt": request.prompt, "modelId": self.model, "init_image_id": init_image_id,
                                **self.wire_params(request), "width": size[0], "height": size[1]}
        return {**body, **self.extra_body}

    async def upload_init_image(self, png: bytes) -> str:
        root = self.base_url.rstrip("/")
        resp = await send(self.provider_name, "POST", f"{root}/init-image", json={"extension": "png"},
                          headers=self._headers(), api_origin=self.base_url, timeout_s=self.request_timeout_s)
        upload = json_of(resp, self.provider_name).get("uploadInitImage") or {}
        try:
            fields = json.loads(upload["fields"])  # a JSON string inside the JSON answer
            url, init_id = upload["url"], upload["id"]
        except (KeyError, TypeError, ValueError) as exc:
            raise Transient(f"leonardo: init-image answer is not a presigned upload ({exc})", provider=self.provider_name) from exc
        # No Authorization header here: S3 refuses a request with two auth mechanisms.
        await send(self.provider_name, "POST", url, data=fields, files={"file": ("source.png", png, "image/png")},
                   timeout_s=self.request_timeout_s)
        return init_id

    async def submit(self, request: GenerationRequest) -> JobHandle:
        size = self.target_size(request)
        self.generation_body(request, "", size)  # refuse what cannot be honoured before the upload
        resized = request.model_copy(update={"width": size[0], "height": size[1]}) if size[0] >= 64 and size[1] >= 64 else request
        png = prepare_source(resized, provider=self.provider_name, fit_to_request=True)
        init_id = await self.upload_init_image(png)
        resp = await send(self.provider_name, "POST", f"{self.base_url.rstrip('/')}/generations",
                          json=self.generation_body(request, init_id, size), headers=self._headers(), api_origin=self.base_url,
                          timeout_s=self.request_timeout_s)
        job = json_of(resp, self.provider_name).get("sdGenerationJob") or {}
        if not job.get("generationId"):
            raise Transient("leonardo: generation answer lacks sdGenerationJob.generationId", provider=self.provider_name)
        return JobHandle(provider=self.provider_name, job_id=job["generationId"],
                         status_url=f"{self.base_url.rstrip('/')}/generations/{job['generationId']}",
                         extra={"init_image_id": init_id, "api_credit_cost": job.get("apiCreditCost")})

    async def _generation(self, handle: JobHandle) -> dict[str, Any]:
        resp = await send(self.provider_name, "GET", handle.status_url or "", headers=self._headers(), api_origin=self.base_url,
                          timeout_s=self.request_timeout_s)
        gen = json_of(resp, self.provider_name).get("generations_by_pk")
        if gen is None:
            raise Rejected(f"leonardo: generation {handle.job_id} not found", provider=self.provider_name)
        return gen

    async def status(self, handle: JobHandle) -> JobStatus:
        gen = await self._generation(handle)
        state = _STATES.get(gen.get("status", ""), JobState.running)
        return JobStatus(state=state, error="generation FAILED" if state == JobState.failed else None,
                         outputs=[i["url"] for i in gen.get("generated_images") or []])

    async def fetch(self, handle: JobHandle) -> list[bytes]:
        gen = await self._generation(handle)
        if gen.get("status") != "COMPLETE":
            raise Transient(f"leonardo: generation {handle.job_id} is {gen.get('status')}", provider=self.provider_name)
        return [await download(self.provider_name, img["url"], timeout_s=self.request_timeout_s)
                for img in gen.get("generated_images") or []]

    def verify_webhook(self, headers: dict[str, str], body: bytes, *, now: float | None = None) -> JobEvent:
        h = {k.lower(): v for k, v in headers.items()}
        expected = self.webhook_callback_api_key.get_secret_value()
        got = h.get("authorization", "")
        if not expected or not hmac.compare_digest(got.encode(), f"Bearer {expected}".encode()):
            raise Rejected("webhook authorization does not carry this key's webhook callback API key",
                           provider=self.provider_name)
        try:
            doc = json.loads(body)
            obj = doc["data"]["object"]
        except (ValueError, KeyError, TypeError):
            raise Rejected("webhook body is not a Leonardo generation event", provider=self.provider_name) from None
        sent = doc.get("timestamp")
        # The token is the same on every delivery: without its timestamp a captured one replays forever.
        if not isinstance(sent, (int, float)) or isinstance(sent, bool) or sent != sent:
            raise Rejected("webhook body lacks its timestamp (milliseconds): a replay cannot be ruled out",
                           provider=self.provider_name)
        age = abs((now if now is not None else time.time()) - sent / 1000)
        if age > self.webhook_tolerance_s:
            raise Rejected(f"webhook timestamp is {age:.0f}s old (tolerance {self.webhook_tolerance_s:.0f}s): replayed",
                           provider=self.provider_name)
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not obj["id"]:
            raise ValueError("a Leonardo generation event with data.object.id was expected")
        state = _STATES.get(obj.get("status", ""), JobState.running)
        return JobEvent(provider=self.provider_name, job_id=obj["id"], state=state,
                        outputs=[i["url"] for i in obj.get("images") or [] if i.get("url")],
                        error="generation FAILED" if state == JobState.failed else None,
                        delivery_id=f"{obj['id']}:{obj.get('status')}")
