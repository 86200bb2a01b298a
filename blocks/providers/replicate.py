"""ReplicateProvider: image-to-image through Replicate's predictions API.

Wire format (reference/providers.md §1): `POST /v1/models/{owner}/{name}/predictions`
(or `/v1/predictions` with a `version`, or `/v1/deployments/{owner}/{name}/predictions`),
`{"input": {...}, "webhook": ..., "webhook_events_filter": ["completed"]}`;
optional `Prefer: wait=N` (the answer may then already hold data-URI outputs);
polling follows the prediction's own `urls.get`; webhooks are Standard Webhooks
(HMAC-SHA256, `whsec_` secret). Outputs are deleted by Replicate after an hour,
so `fetch` downloads them as soon as the job is done.

Input names follow the SDXL-style schema most img2img models on Replicate use
(`image`, `prompt_strength`, `num_outputs`, …); `input_names` renames them for
a model whose schema differs, `extra_input` adds model-specific ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from blocks.providers.hosted import HostedProvider
from blocks.providers.http import data_uri, download, is_remote, json_of, prepare_source, send
from models import GenerationRequest, JobEvent, JobHandle, JobState, JobStatus, Rejected, Transient

_STATES = {
    "starting": JobState.queued,
    "processing": JobState.running,
    "succeeded": JobState.succeeded,
    "failed": JobState.failed,
    "canceled": JobState.canceled,
    "aborted": JobState.canceled,
}
DATA_URI_LIMIT = 1_000_000  # Replicate recommends data URIs only under 1 MB; larger sources are uploaded


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: float,
                            now: float | None = None, provider: str = "replicate") -> str:
    """Check a Standard Webhooks signature; returns the delivery id (webhook-id)."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and ts and sigs):
        raise Rejected("webhook lacks webhook-id, webhook-timestamp or webhook-signature", provider=provider)
    try:
        age = abs((now if now is not None else time.time()) - int(ts))
    except ValueError:
        raise Rejected("webhook-timestamp is not a Unix time", provider=provider) from None
    if age > tolerance_s:
        raise Rejected(f"webhook timestamp is {age:.0f}s off (tolerance {tolerance_s:.0f}s): replayed or clock skew",
                       provider=provider)
    if not secret.startswith("whsec_"):
        raise Rejected("webhook_secret must start with whsec_ (GET /v1/webhooks/default/secret)", provider=provider)
    try:
        key = base64.b64decode(secret.split("_", 1)[1])
    except (binascii.Error, ValueError):
        raise Rejected("webhook_secret is not valid base64 after whsec_", provider=provider) from None
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    for candidate in sigs.split():
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return msg_id
    raise Rejected("webhook signature does not match", provider=provider)


class ReplicateProvider(HostedProvider):
    """Replicate predictions (official model, version or deployment) with webhooks and polling."""

    _block_type_name = "Brandforge Replicate"
    _block_type_slug = "brandforge-replicate"
    _description = "Image-to-image on Replicate: predictions, Prefer: wait, polling, Standard Webhooks."

    provider_name: ClassVar[str] = "replicate"
    supports_webhooks: ClassVar[bool] = True
    max_batch_size: ClassVar[int] = 4
    unsupported_fields: ClassVar[dict[str, str]] = {
        "prompt_2": "SDXL on Replicate takes one prompt",
        "image_guidance_scale": "only InstructPix2Pix pipelines have it",
    }

    base_url: str = "https://api.replicate.com"
    model: str = Field("stability-ai/sdxl", description="owner/name of an official model (ignored when version or deployment is set).")
    version: str | None = Field(None, description="A model version id: uses POST /v1/predictions.")
    deployment: str | None = Field(None, description="owner/name of a deployment: uses its predictions endpoint.")
    prefer_wait_s: int = Field(0, ge=0, le=60, description="Hold the create call up to N s (Prefer: wait=N); 0 = off.")
    input_upload: Literal["auto", "data_uri", "files_api"] = Field(
        "auto", description="How a local source is sent: a data URI (< 1 MB), the Files API, or auto."
    )
    input_names: dict[str, str] = Field(default_factory=dict, description="Rename inputs, e.g. {'image': 'input_image'}.")
    extra_input: dict[str, Any] = Field(default_factory=dict, description="Model-specific inputs sent as they are.")
    webhook_secret: SecretStr = Field(SecretStr(""), description="whsec_… from GET /v1/webhooks/default/secret.")
    webhook_tolerance_s: float = Field(300.0, gt=0, description="Oldest webhook timestamp accepted (replay guard).")
    requests_per_minute: int = 600  # Replicate's documented create-prediction limit
    price_per_image_usd: float = 0.0035

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def _endpoint(self) -> tuple[str, dict[str, Any]]:
        root = self.base_url.rstrip("/")
        if self.version:
            return f"{root}/v1/predictions", {"version": self.version}
        if self.deployment:
            return f"{root}/v1/deployments/{self.deployment}/predictions", {}
        if "/" not in self.model:
            raise Rejected(f"model must be owner/name (got {self.model!r}), or set version or deployment",
                           provider=self.provider_name)
        return f"{root}/v1/models/{self.model}/predictions", {}

    async def _image_input(self, request: GenerationRequest) -> str:
        if is_remote(request.source_image) and not (request.width or request.height):
            return request.source_image
        data = prepare_source(request, provider=self.provider_name)
        if self.input_upload == "data_uri" or (self.input_upload == "auto" and len(data) < DATA_URI_LIMIT):
            return data_uri(data)
        resp = await send(self.provider_name, "POST", f"{self.base_url.rstrip('/')}/v1/files",
                          timeout_s=self.request_timeout_s, headers=self._headers(),
                          files={"content": ("source.png", data, "image/png")})
        return json_of(resp, self.provider_name)["urls"]["get"]

    def build_input(self, request: GenerationRequest, image: str) -> dict[str, Any]:
        """The `input` object; our strength is the diffusers one, as is SDXL's `prompt_strength`."""
        inputs: dict[str, Any] = {
            "image": image,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "prompt_strength": request.strength,
            "guidance_scale": request.guidance_scale,
            "num_inference_steps": request.steps,
            "num_outputs": request.batch_size,
        }
        if request.seed is not None:
            inputs["seed"] = request.seed
        if request.width:
            inputs["width"] = request.width
        if request.height:
            inputs["height"] = request.height
        inputs = {self.input_names.get(k, k): v for k, v in inputs.items()}
        return {**inputs, **self.extra_input}

    async def submit(self, request: GenerationRequest) -> JobHandle:
        self.check_supported(request)
        url, body = self._endpoint()
        body["input"] = self.build_input(request, await self._image_input(request))
        if self.webhook_url:
            body["webhook"] = self.webhook_url
            body["webhook_events_filter"] = ["completed"]
        headers = self._headers()
        if self.prefer_wait_s:
            headers["Prefer"] = f"wait={self.prefer_wait_s}"
        resp = await send(self.provider_name, "POST", url, json=body, headers=headers,
                          timeout_s=self.request_timeout_s + self.prefer_wait_s)
        prediction = json_of(resp, self.provider_name)
        handle = JobHandle(provider=self.provider_name, job_id=prediction["id"],
                           status_url=prediction.get("urls", {}).get("get") or resp.headers.get("location"))
        if prediction.get("status") == "succeeded" and prediction.get("output"):
            # Sync mode may answer with data URIs: keep them now, they are the result.
            self.store_job(handle.job_id, [await download(self.provider_name, u) for u in _outputs(prediction)])
        return handle

    async def _prediction(self, handle: JobHandle) -> dict[str, Any]:
        url = handle.status_url or f"{self.base_url.rstrip('/')}/v1/predictions/{handle.job_id}"
        resp = await send(self.provider_name, "GET", url, headers=self._headers(), timeout_s=self.request_timeout_s)
        return json_of(resp, self.provider_name)

    async def status(self, handle: JobHandle) -> JobStatus:
        if self.stored_job(handle.job_id) is not None:
            return JobStatus(state=JobState.succeeded)
        p = await self._prediction(handle)
        state = _STATES.get(p.get("status", ""), JobState.running)
        return JobStatus(state=state, error=p.get("error"), outputs=_outputs(p) if state == JobState.succeeded else [])

    async def fetch(self, handle: JobHandle) -> list[bytes]:
        stored = self.stored_job(handle.job_id)
        if stored is not None:
            return stored
        p = await self._prediction(handle)
        if p.get("status") != "succeeded":
            raise Transient(f"prediction {handle.job_id} is {p.get('status')}, not succeeded", provider=self.provider_name)
        return [await download(self.provider_name, u, timeout_s=self.request_timeout_s) for u in _outputs(p)]

    def verify_webhook(self, headers: dict[str, str], body: bytes, *, now: float | None = None) -> JobEvent:
        delivery = verify_standard_webhook(self.webhook_secret.get_secret_value(), headers, body,
                                           tolerance_s=self.webhook_tolerance_s, now=now, provider=self.provider_name)
        try:
            p = json.loads(body)
        except ValueError:
            raise Rejected("webhook body is not JSON", provider=self.provider_name) from None
        state = _STATES.get(p.get("status", ""), JobState.running)
        return JobEvent(provider=self.provider_name, job_id=p["id"], state=state, error=p.get("error"),
                        outputs=[u for u in _outputs(p) if not u.startswith("data:")], delivery_id=delivery)


def _outputs(prediction: dict[str, Any]) -> list[str]:
    out = prediction.get("output")
    if out is None:
        return []
    return [out] if isinstance(out, str) else [u for u in out if isinstance(u, str)]
