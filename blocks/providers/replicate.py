"""ReplicateProvider: image-to-image through Replicate's predictions API.

Wire format (reference/providers.md §1): `POST /v1/models/{owner}/{name}/predictions`
(or `/v1/predictions` with a `version`, or `/v1/deployments/{owner}/{name}/predictions`),
`{"input": {...}, "webhook": ..., "webhook_events_filter": ["completed"]}`;
optional `Prefer: wait=N` (the answer may then already hold data-URI outputs);
polling follows the prediction's own `urls.get`; webhooks are Standard Webhooks
(HMAC-SHA256, `whsec_` secret). Outputs are deleted by Replicate after an hour,
so `fetch` downloads them as soon as the job is done.

Input names follow the SDXL-style schema most img2img models on Replicate use
(`image`, `prompt_strength`, `num_outputs`, …), declared once in `wire_map`;
`input_names` renames them for a model whose schema differs, `extra_input` adds
model-specific ones.

The same block refines (the post-processing chain's upscale, faces and reframe
steps): official models for Real-ESRGAN, GFPGAN/CodeFormer and inpainting, run
through the same predictions plumbing and the same token. `ReplicateRefiner`
is this block under the refiner's saved block type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import asyncio
import time
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from brandforge.blocks.http import json_of, send
from brandforge.blocks.providers.base import ImageRefiner, Unsupported, Wire, WireMap, at_most, renamed_fields, sniff_mime
from brandforge.blocks.providers.hosted import HostedProvider
from brandforge.blocks.providers.http import control_reference, data_uri, download, is_remote, prepare_source
from brandforge.models import GenerationRequest, JobEvent, JobHandle, JobState, JobStatus, Rejected, Transient

_STATES = {
    "starting": JobState.queued,
    "processing": JobState.running,
    "succeeded": JobState.succeeded,
    "failed": JobState.failed,
    "canceled": JobState.canceled,
    "aborted": JobState.canceled,
}
MAX_LIST_PAGES = 5  # find_job looks at the newest 500 predictions at most
DATA_URI_LIMIT = 1_000_000  # Replicate recommends data URIs only under 1 MB; larger sources are uploaded


MIN_WEBHOOK_KEY_BYTES = 16  # Standard Webhooks secrets are 24-64 random bytes; anything shorter is guessable


def standard_webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret, as the reference libraries read it: the `whsec_`
    prefix optional, base64 with or without padding. Raises ValueError for an empty, malformed or
    too-short secret (an empty key would let anyone sign a delivery)."""
    text = secret.strip().removeprefix("whsec_")
    if not text:
        raise ValueError("webhook_secret is empty; copy it from GET /v1/webhooks/default/secret (whsec_…)")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook_secret is not base64 (after the optional whsec_ prefix)") from None
    if len(key) < MIN_WEBHOOK_KEY_BYTES:
        raise ValueError(f"webhook_secret is too short: {len(key)} bytes; at least {MIN_WEBHOOK_KEY_BYTES} are needed")
    return key


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: float,
                            now: float | None = None, provider: str = "replicate") -> str:
    """Check a Standard Webhooks signature; returns the delivery id (webhook-id)."""
    try:
        key = standard_webhook_key(secret)
    except ValueError as exc:
        raise Rejected(str(exc), provider=provider) from None
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
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    for candidate in sigs.split():
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected.encode()):
            return msg_id
    raise Rejected("webhook signature does not match", provider=provider)


class ReplicateProvider(HostedProvider, ImageRefiner):
    """Replicate predictions (official model, version or deployment) with webhooks and polling; also a refiner."""

    _block_type_name = "Brandforge Replicate"
    _block_type_slug = "brandforge-replicate"
    _description = "Image-to-image on Replicate: predictions, Prefer: wait, polling, Standard Webhooks."

    provider_name: ClassVar[str] = "replicate"
    supports_loras: ClassVar[bool] = True
    supports_control: ClassVar[bool] = True
    refiner_name: ClassVar[str] = "replicate"
    lists_jobs: ClassVar[bool] = True
    offers: ClassVar[frozenset[str]] = frozenset({"upscale", "faces", "outpaint"})
    supports_webhooks: ClassVar[bool] = True

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

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, v: SecretStr) -> SecretStr:
        """Refused when saved: a set secret must be a usable key (empty = no webhooks, polling only)."""
        secret = v.get_secret_value()
        if secret and set(secret) != {"*"}:  # a UI mask is refused by name where the profile loads
            standard_webhook_key(secret)
        return v

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> "ReplicateProvider":
        if self.webhook_url and not self.webhook_secret.get_secret_value():
            raise ValueError("webhook_url is set but webhook_secret is empty: every delivery would be refused; "
                             "copy the secret from GET /v1/webhooks/default/secret")
        return self

    requests_per_minute: int = 600  # Replicate's documented create-prediction limit
    price_per_image_usd: float = 0.0035
    # The refine capability (post-processing chain).
    upscale_model: str = Field("nightmareai/real-esrgan", description="owner/name of the upscaler (inputs: image, scale).")
    gfpgan_model: str = Field("tencentarc/gfpgan", description="owner/name of GFPGAN (inputs: img, version, scale).")
    codeformer_model: str = Field("sczhou/codeformer", description="owner/name of CodeFormer (inputs: image, codeformer_fidelity …).")
    inpaint_model: str = Field(
        "stability-ai/stable-diffusion-inpainting", description="owner/name of an inpainting model (inputs: image, mask, prompt, seed)."
    )
    refine_poll_s: float = Field(1.0, gt=0, description="Longest gap between status polls of a refine prediction.")
    refine_deadline_s: float = Field(600.0, gt=0, description="Longest wait for one refine result.")

    def wire_map(self) -> WireMap:
        return {
            "prompt_2": Unsupported("SDXL on Replicate takes one prompt"),
            "negative_prompt": Wire("negative_prompt"),
            "guidance_scale": Wire("guidance_scale"),
            "image_guidance_scale": Unsupported("only InstructPix2Pix pipelines have it"),
            "strength": Wire("prompt_strength", how="the same convention: 1.0 = full destruction of the image"),
            "steps": Wire("num_inference_steps"),
            "batch_size": Wire("num_outputs", at_most(4, "SDXL on Replicate makes 1-4 outputs per prediction")),
            "seed": Wire("seed"),
            "width": Wire("width"),
            "height": Wire("height"),
        }

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def _root(self) -> str:
        return self.base_url.rstrip("/")

    def _endpoint(self) -> tuple[str, dict[str, Any]]:
        if self.version:
            return f"{self._root()}/v1/predictions", {"version": self.version}
        if self.deployment:
            return f"{self._root()}/v1/deployments/{self.deployment}/predictions", {}
        return self._model_endpoint(self.model), {}

    def _model_endpoint(self, model: str) -> str:
        if model.count("/") != 1 or not all(model.split("/")):
            raise Rejected(f"model must be owner/name (got {model!r}), or set version or deployment",
                           provider=self.provider_name)
        return f"{self._root()}/v1/models/{model}/predictions"

    async def _file_input(self, data: bytes, *, force: str = "auto") -> str:
        """A data URI below Replicate's 1 MB recommendation, else an upload to the Files API."""
        mime = sniff_mime(data)
        if force == "data_uri" or (force == "auto" and len(data) < DATA_URI_LIMIT):
            return data_uri(data, mime)
        resp = await send(self.provider_name, "POST", f"{self._root()}/v1/files",
                          timeout_s=self.request_timeout_s, headers=self._headers(), api_origin=self.base_url,
                          files={"content": ("input", data, mime)})
        return json_of(resp, self.provider_name)["urls"]["get"]

    async def _image_input(self, request: GenerationRequest) -> str:
        if is_remote(request.source_image) and not (request.width or request.height):
            return request.source_image
        return await self._file_input(prepare_source(request, provider=self.provider_name), force=self.input_upload)

    def build_input(self, request: GenerationRequest, image: str) -> dict[str, Any]:
        """The `input` object: the wire map applied, names renamed, model-specific inputs added."""
        inputs = {"image": image, "prompt": request.prompt, **self.wire_params(request)}
        if request.loras:  # SDXL-family models on Replicate: one LoRA as `lora_weights` (a URL) and `lora_scale`
            if len(request.loras) > 1:
                raise Rejected(f"loras: replicate models take one LoRA (lora_weights), {len(request.loras)} were asked for",
                               provider=self.provider_name)
            inputs.update(lora_weights=request.loras[0].weights, lora_scale=request.loras[0].scale)
        if request.control:  # ControlNet models on Replicate: a reference image and its conditioning scale
            inputs.update(control_image=control_reference(request, provider=self.provider_name),
                          controlnet_conditioning_scale=request.control.scale)
        inputs = {self.input_names.get(k, k): v for k, v in inputs.items()}
        return {**inputs, **self.extra_input}

    async def _create(self, url: str, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """POST a prediction; (the prediction, its polling URL)."""
        headers = self._headers()
        if self.prefer_wait_s:
            headers["Prefer"] = f"wait={self.prefer_wait_s}"
        resp = await send(self.provider_name, "POST", url, json=body, headers=headers, api_origin=self.base_url,
                          timeout_s=self.request_timeout_s + self.prefer_wait_s)
        prediction = json_of(resp, self.provider_name)
        return prediction, prediction.get("urls", {}).get("get") or resp.headers.get("location")

    async def submit(self, request: GenerationRequest) -> JobHandle:
        self.wire_params(request)  # refuse what cannot be honoured before any upload
        url, body = self._endpoint()
        body["input"] = self.build_input(request, await self._image_input(request))
        if self.webhook_url:
            body["webhook"] = self.webhook_url
            body["webhook_events_filter"] = ["completed"]
        prediction, status_url = await self._create(url, body)
        handle = JobHandle(provider=self.provider_name, job_id=prediction["id"], status_url=status_url)
        if prediction.get("status") == "succeeded" and prediction.get("output"):
            # Sync mode may answer with data URIs: keep them now, they are the result.
            self.store_job(handle.job_id, [await download(self.provider_name, u) for u in _outputs(prediction)])
        return handle

    def _expected_image(self, request: GenerationRequest) -> str | None:
        """The `image` input a submission of `request` sends, when it is known without uploading (else None)."""
        if is_remote(request.source_image) and not (request.width or request.height):
            return request.source_image
        data = prepare_source(request, provider=self.provider_name)
        if self.input_upload == "data_uri" or (self.input_upload == "auto" and len(data) < DATA_URI_LIMIT):
            return data_uri(data, sniff_mime(data))
        return None  # an upload gets a new file URL each time: matched on the other inputs

    async def find_job(self, request: GenerationRequest, since: datetime,
                       exclude: frozenset[str] = frozenset()) -> JobHandle | None:
        """The newest prediction created since `since` whose input is this request's (GET /v1/predictions,
        newest first, 100 a page): Replicate takes no idempotency key, and the input (the seed included)
        names a generation."""
        image = self._expected_image(request)
        expected = json.loads(json.dumps(self.build_input(request, image or "")))
        if image is None:
            expected.pop("image", None)
        url: str | None = f"{self._root()}/v1/predictions"
        for _ in range(MAX_LIST_PAGES):
            resp = await send(self.provider_name, "GET", url, headers=self._headers(), api_origin=self.base_url,
                              timeout_s=self.request_timeout_s)
            page = json_of(resp, self.provider_name)
            for p in page.get("results") or []:
                created = _when(p.get("created_at"))
                if created is not None and created < since:
                    return None
                inputs = dict(p.get("input") or {})
                if image is None:
                    inputs.pop("image", None)
                if inputs == expected and p.get("status") != "canceled" and isinstance(p.get("id"), str) and p["id"] not in exclude:
                    return JobHandle(provider=self.provider_name, job_id=p["id"], status_url=(p.get("urls") or {}).get("get"))
            url = page.get("next")
            if not url:
                return None
        return None

    async def _prediction(self, handle: JobHandle) -> dict[str, Any]:
        url = handle.status_url or f"{self._root()}/v1/predictions/{handle.job_id}"
        resp = await send(self.provider_name, "GET", url, headers=self._headers(), api_origin=self.base_url, timeout_s=self.request_timeout_s)
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
        p = json.loads(body)  # signed: a body we cannot read is the gateway's 400/422, not a forgery
        if not isinstance(p, dict) or not isinstance(p.get("id"), str) or not p["id"]:
            raise ValueError("a Replicate prediction object with an \"id\" was expected")
        state = _STATES.get(p.get("status", ""), JobState.running)
        return JobEvent(provider=self.provider_name, job_id=p["id"], state=state, error=p.get("error"),
                        outputs=[u for u in _outputs(p) if not u.startswith("data:")], delivery_id=delivery)

    # ------------------------------------------------------------------ the refine capability

    async def run_model(self, model: str, inputs: dict[str, Any], images: dict[str, bytes]) -> bytes:
        """Run one prediction on an official model, wait for it, and return its (first) output file's bytes."""
        url = self._model_endpoint(model)
        body = {"input": {**inputs, **{k: await self._file_input(v) for k, v in images.items()}}}
        prediction, status_url = await self._create(url, body)
        handle = JobHandle(provider=self.provider_name, job_id=prediction.get("id", ""), status_url=status_url)
        started, delay = time.monotonic(), 0.05
        while prediction.get("status") not in ("succeeded", "failed", "canceled"):
            if time.monotonic() - started > self.refine_deadline_s:
                raise Transient(f"prediction {handle.job_id} not finished after {self.refine_deadline_s:.0f}s",
                                provider=self.provider_name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.refine_poll_s)
            prediction = await self._prediction(handle)
        if prediction["status"] != "succeeded":
            raise Rejected(f"{model} prediction {handle.job_id} {prediction['status']}: {prediction.get('error')}",
                           provider=self.provider_name)
        outputs = _outputs(prediction)
        if not outputs:
            raise Transient(f"{model} prediction {handle.job_id} returned no file (output={prediction.get('output')!r})",
                            provider=self.provider_name)
        # Output URLs live on another host (replicate.delivery) and need no token: download sends none.
        return await download(self.provider_name, outputs[0], timeout_s=self.request_timeout_s)

    async def upscale(self, image: bytes, scale: int = 4) -> bytes:
        return await self.run_model(self.upscale_model, {"scale": scale, "face_enhance": False}, {"image": image})

    async def restore_faces(self, image: bytes, model: str = "gfpgan", fidelity: float = 0.5) -> bytes:
        # scale/upscale 1: restoration, not enlargement; the upscale step sizes the image.
        if model == "codeformer":
            inputs = {"codeformer_fidelity": fidelity, "background_enhance": False, "face_upsample": False, "upscale": 1}
            return await self.run_model(self.codeformer_model, inputs, {"image": image})
        return await self.run_model(self.gfpgan_model, {"version": "v1.4", "scale": 1}, {"img": image})

    async def outpaint(self, image: bytes, mask: bytes, prompt: str = "", seed: int | None = None) -> bytes:
        inputs: dict[str, Any] = {"prompt": prompt or "seamless continuation of the scene"}
        if seed is not None:
            inputs["seed"] = seed
        return await self.run_model(self.inpaint_model, inputs, {"image": image, "mask": mask})


class ReplicateRefiner(ReplicateProvider):
    """The Replicate block as the post-processing chain's refiner (the saved block type refiners had)."""

    _block_type_name = "Brandforge Replicate Refiner"
    _block_type_slug = "brandforge-replicate-refiner"
    _description = "Runs Real-ESRGAN, GFPGAN/CodeFormer and inpainting models on Replicate for the post-processing chain."

    prefer_wait_s: int = Field(55, ge=0, le=60, description="Hold the create call up to N s (Prefer: wait=N); 0 = just poll.")

    @model_validator(mode="before")
    @classmethod
    def _older_field_names(cls, data: Any) -> Any:
        return renamed_fields(data, {"api_token": "api_key", "wait_s": "prefer_wait_s", "timeout_s": "request_timeout_s",
                                     "poll_interval_s": "refine_poll_s", "deadline_s": "refine_deadline_s"})


def _when(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _outputs(prediction: dict[str, Any]) -> list[str]:
    out = prediction.get("output")
    if out is None:
        return []
    return [out] if isinstance(out, str) else [u for u in out if isinstance(u, str)]
