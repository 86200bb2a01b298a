"""FalProvider: image-to-image through fal.ai's queue API.

Wire format (reference/providers.md §2): `POST {queue}/{model_id}` with the
model's inputs as JSON (`?fal_webhook=<url>` for a callback); the answer's
`status_url` / `response_url` are followed exactly as given (they drop the
model's subpath); a submit with a webhook is answered with the ids only
(`{request_id, gateway_request_id}`), and the URLs then follow fal's own
{owner}/{app}/requests/<id> layout; status answers 202 while queued or running
and 200 when COMPLETED (with `error` when it failed). Webhooks are signed with
Ed25519 over `request_id\\nuser_id\\ntimestamp\\nsha256(body)`, checked against
the public keys of a configurable JWKS URL (cached for a day at most).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from typing import Any, ClassVar
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field

from brandforge.blocks.http import json_of, send, send_sync
from brandforge.blocks.providers.base import Unsupported, Wire, WireMap
from brandforge.blocks.providers.hosted import HostedProvider
from brandforge.blocks.providers.http import control_reference, data_uri, download, is_remote, prepare_source
from brandforge.models import ControlSpec, GenerationRequest, JobEvent, JobHandle, JobState, JobStatus, Rejected, Transient

_JWKS_CACHE: dict[str, tuple[float, list[Ed25519PublicKey]]] = {}
_JWKS_LOCK = threading.Lock()
JWKS_TTL_S = 24 * 3600
JWKS_MIN_REFRESH_S = 300  # a forged webhook must not make us hammer the JWKS endpoint


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwks_keys(url: str, *, timeout_s: float = 10.0, refresh: bool = False) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS document, cached per URL for at most a day;
    `refresh` re-reads a copy older than JWKS_MIN_REFRESH_S (key rotation)."""
    with _JWKS_LOCK:
        cached = _JWKS_CACHE.get(url)
        max_age = JWKS_MIN_REFRESH_S if refresh else JWKS_TTL_S
        if cached and time.monotonic() - cached[0] < max_age:
            return cached[1]
    try:
        doc = json_of(send_sync("fal", "GET", url, timeout_s=timeout_s), "fal")
    except (Transient, Rejected) as exc:
        # Without the keys no webhook can be verified yet; polling still finishes the job.
        raise Transient(f"fal: cannot read the webhook JWKS at {url}: {exc}", provider="fal") from exc
    keys = [
        Ed25519PublicKey.from_public_bytes(_b64url_decode(k["x"]))
        for k in doc.get("keys", [])
        if k.get("kty") == "OKP" and k.get("crv") == "Ed25519" and k.get("x")
    ]
    with _JWKS_LOCK:
        _JWKS_CACHE[url] = (time.monotonic(), keys)
    return keys


class FalProvider(HostedProvider):
    """fal.ai queue: submit, follow status_url/response_url, Ed25519 webhooks."""

    _block_type_name = "Brandforge fal"
    _block_type_slug = "brandforge-fal"
    _description = "Image-to-image on fal.ai's queue API with webhooks (Ed25519, JWKS) and polling."

    provider_name: ClassVar[str] = "fal"
    supports_loras: ClassVar[bool] = True
    supports_control: ClassVar[bool] = True  # on the flux-general endpoints, with a ControlNet per kind (control_problem)
    supports_webhooks: ClassVar[bool] = True

    base_url: str = "https://queue.fal.run"
    model: str = Field("fal-ai/fast-sdxl/image-to-image", description="fal model id, with its subpath.")
    jwks_url: str = Field("https://rest.alpha.fal.ai/.well-known/jwks.json",
                          description="Where fal publishes its webhook keys (two URLs are in use; configurable).")
    webhook_tolerance_s: float = Field(300.0, gt=0, description="Oldest webhook timestamp accepted (replay guard).")
    extra_input: dict[str, Any] = Field(default_factory=dict, description="Model-specific inputs sent as they are.")
    controlnet_paths: dict[str, str] = Field(
        default_factory=dict, description="Structure control on fal-ai/flux-general: the ControlNet weights (URL or "
        "Hugging Face repo) per control kind, e.g. {'edges': …canny…, 'depth': …, 'pose': …}.")
    # fal limits concurrency per account, not requests per minute; queued requests wait, they are not refused.
    requests_per_minute: int = 600
    price_per_image_usd: float = 0.003

    @property
    def _is_flux(self) -> bool:
        return "flux" in self.model

    def wire_map(self) -> WireMap:
        # fal's `strength` is read as a denoise strength (1 = ignore the source), like ours;
        # reference/providers.md marks that as presumed, not confirmed by fal's docs.
        flux = self._is_flux
        return {
            "prompt_2": Unsupported("fal img2img models take one prompt"),
            "negative_prompt": Unsupported("FLUX has no negative prompt") if flux else Wire("negative_prompt"),
            "guidance_scale": Wire("guidance_scale"),
            "image_guidance_scale": Unsupported("only InstructPix2Pix pipelines have it"),
            "strength": Wire("strength", how="presumed the same convention (denoise)"),
            "steps": Wire("num_inference_steps"),
            "batch_size": Wire("num_images"),
            "seed": Wire("seed"),
            "width": Wire(None, how="the source is resized (FLUX) or image_size is sent (SDXL)"),
            "height": Wire(None, how="the source is resized (FLUX) or image_size is sent (SDXL)"),
        }

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.token()}"}

    def control_problem(self, control: ControlSpec) -> str | None:
        if "flux-general" not in self.model:
            return (f"fal takes ControlNets on its fal-ai/flux-general endpoints only (model is {self.model!r}); "
                    "use e.g. fal-ai/flux-general/image-to-image")
        if not self.controlnet_paths.get(control.kind):
            return f"the fal block's controlnet_paths.{control.kind} names no ControlNet for {control.kind} control"
        return None

    def build_input(self, request: GenerationRequest, image: str) -> dict[str, Any]:
        body: dict[str, Any] = {"image_url": image, "prompt": request.prompt, **self.wire_params(request)}
        if request.loras:  # fal's LoRA endpoints (flux-lora, sdxl …) take `loras: [{path, scale}]`
            body["loras"] = [{"path": lo.weights, "scale": lo.scale} for lo in request.loras]
        if request.control:
            # fal-ai/flux-general(/image-to-image) takes `controlnets: [ControlNet]` (one at a time), ControlNet being
            # {path: the ControlNet weights, image_url: the control image, conditioning_scale (default 1),
            # start_percentage, end_percentage, mask_url}: fal's API page for the endpoint and its generated
            # client types (fal-ai/fal-js libs/client/src/types/endpoints.ts, FluxGeneralImageToImageInput).
            body["controlnets"] = [{"path": self.controlnet_paths[request.control.kind],
                                    "image_url": control_reference(request, provider=self.provider_name),
                                    "conditioning_scale": request.control.scale}]
        if not self._is_flux:
            body["format"] = "png"
            if request.width and request.height:
                body["image_size"] = {"width": request.width, "height": request.height}
        else:
            body["output_format"] = "png"
        return {**body, **self.extra_input}

    async def submit(self, request: GenerationRequest) -> JobHandle:
        self.wire_params(request)  # refuse what cannot be honoured before the source is encoded
        if is_remote(request.source_image) and not (request.width or request.height):
            image = request.source_image
        else:
            image = data_uri(prepare_source(request, provider=self.provider_name,
                                            fit_to_request=self._is_flux))
        url = f"{self.base_url.rstrip('/')}/{self.model}"
        if self.webhook_url:
            url += f"?fal_webhook={quote(self.webhook_url, safe='')}"
        resp = await send(self.provider_name, "POST", url, json=self.build_input(request, image),
                          headers=self._headers(), api_origin=self.base_url, timeout_s=self.request_timeout_s)
        body = json_of(resp, self.provider_name)
        rid = body.get("request_id") if isinstance(body, dict) else None
        if not rid:
            raise Transient("fal: submit answer lacks 'request_id'", provider=self.provider_name)
        # With `fal_webhook` fal documents the answer as `{request_id, gateway_request_id}`: the job
        # is accepted (and paid), so it is never resubmitted; its queue URLs are then fal's own
        # layout, which keeps only {owner}/{app} of the model id (never its subpath).
        urls = self.queue_urls(rid)
        return JobHandle(provider=self.provider_name, job_id=rid, status_url=body.get("status_url") or urls["status_url"],
                         result_url=body.get("response_url") or urls["response_url"],
                         extra={"cancel_url": body.get("cancel_url") or urls["cancel_url"]})

    def queue_urls(self, request_id: str) -> dict[str, str]:
        """fal's queue URLs of a request (fal_client's `from_request_id` layout: {owner}/{app} only)."""
        app = "/".join(self.model.strip("/").split("/")[:2])
        base = f"{self.base_url.rstrip('/')}/{app}/requests/{request_id}"
        return {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}

    async def status(self, handle: JobHandle) -> JobStatus:
        resp = await send(self.provider_name, "GET", f"{handle.status_url}?logs=1", headers=self._headers(), api_origin=self.base_url,
                          timeout_s=self.request_timeout_s)
        body = json_of(resp, self.provider_name)
        state = body.get("status")
        if resp.status_code == 202 or state in ("IN_QUEUE", "IN_PROGRESS"):
            return JobStatus(state=JobState.queued if state == "IN_QUEUE" else JobState.running)
        if state == "COMPLETED":
            if body.get("error"):
                return JobStatus(state=JobState.failed, error=f"{body.get('error_type') or 'error'}: {body['error']}")
            return JobStatus(state=JobState.succeeded)
        raise Transient(f"fal: unknown status {state!r}", provider=self.provider_name)

    async def fetch(self, handle: JobHandle) -> list[bytes]:
        resp = await send(self.provider_name, "GET", handle.result_url or "", headers=self._headers(), api_origin=self.base_url,
                          timeout_s=self.request_timeout_s)
        body = json_of(resp, self.provider_name)
        nsfw = body.get("has_nsfw_concepts") or []
        if nsfw and all(nsfw):
            raise Rejected("fal: every output was flagged by the safety checker (has_nsfw_concepts)",
                           provider=self.provider_name)
        seed = body.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            # fal answers with the seed it used; the generate task records it when it differs from ours.
            handle.extra["reported_seed"] = seed
        return [await download(self.provider_name, img["url"], timeout_s=self.request_timeout_s)
                for img in body.get("images", [])]

    def verify_webhook(self, headers: dict[str, str], body: bytes, *, now: float | None = None) -> JobEvent:
        h = {k.lower(): v for k, v in headers.items()}
        rid, uid = h.get("x-fal-webhook-request-id"), h.get("x-fal-webhook-user-id")
        ts, sig = h.get("x-fal-webhook-timestamp"), h.get("x-fal-webhook-signature")
        if not (rid and uid and ts and sig):
            raise Rejected("webhook lacks the X-Fal-Webhook-Request-Id/-User-Id/-Timestamp/-Signature headers",
                           provider=self.provider_name)
        try:
            age = abs((now if now is not None else time.time()) - int(ts))
            signature = bytes.fromhex(sig)
        except ValueError:
            raise Rejected("webhook timestamp or signature is malformed", provider=self.provider_name) from None
        if age > self.webhook_tolerance_s:
            raise Rejected(f"webhook timestamp is {age:.0f}s old (tolerance {self.webhook_tolerance_s:.0f}s): replayed",
                           provider=self.provider_name)
        message = "\n".join([rid, uid, ts, hashlib.sha256(body).hexdigest()]).encode()
        if not self._signed_by_jwks(signature, message):
            raise Rejected("webhook signature does not match any key of the JWKS", provider=self.provider_name)
        try:
            doc = json.loads(body)
        except ValueError:
            raise Rejected("webhook body is not JSON", provider=self.provider_name) from None
        if doc.get("request_id") != rid:
            raise Rejected("webhook body's request_id differs from the signed header", provider=self.provider_name)
        ok = doc.get("status") == "OK"
        payload = doc.get("payload") or {}
        outputs = [img.get("url") for img in payload.get("images", [])] if ok and isinstance(payload, dict) else []
        error = None if ok else f"{doc.get('error') or 'error'}: {json.dumps(payload)[:300]}"
        return JobEvent(provider=self.provider_name, job_id=rid, state=JobState.succeeded if ok else JobState.failed,
                        outputs=[u for u in outputs if u], error=error, delivery_id=f"{rid}:{doc.get('status')}")

    def _signed_by_jwks(self, signature: bytes, message: bytes) -> bool:
        for refresh in (False, True):  # a key rotation shows up as a miss on the cached set
            for key in jwks_keys(self.jwks_url, timeout_s=min(10.0, self.request_timeout_s), refresh=refresh):
                try:
                    key.verify(signature, message)
                    return True
                except InvalidSignature:
                    continue
        return False
