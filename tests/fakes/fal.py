"""Fake fal.ai queue API: submit, status (202 / 200), result, cancel, Ed25519-signed webhooks, JWKS.

Wire format as in reference/providers.md §2. The returned `status_url` /
`response_url` drop the model's subpath (`fal-ai/fast-sdxl/requests/<id>`), as
fal's do; URLs rebuilt with the subpath get 404. A submit with `?fal_webhook=` is
answered as fal documents it: `{request_id, gateway_request_id}`, no URLs. Validation errors are
FastAPI-style 422 `{"detail": [{"loc", "msg", "type"}]}`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeProvider, Job, Knobs, fetch_url, neutral_request

KEY = "fal_fake_key_id:fal_fake_secret"
USER_ID = "fake-user-1"

SDXL_INPUTS = {"image_url", "prompt", "negative_prompt", "strength", "num_inference_steps", "guidance_scale", "seed",
               "num_images", "image_size", "format", "loras", "embeddings", "sync_mode", "enable_safety_checker",
               "expand_prompt", "safety_checker_version"}
FLUX_INPUTS = {"image_url", "prompt", "strength", "num_inference_steps", "guidance_scale", "seed", "num_images",
               "output_format", "enable_safety_checker", "sync_mode", "acceleration"}
# fal-ai/flux-general(/image-to-image): FLUX dev with LoRAs and ControlNets (fal-js endpoints.ts,
# FluxGeneralImageToImageInput; ControlNet = {path, image_url, mask_url?, conditioning_scale?, start_percentage?,
# end_percentage?, config_url?, variant?}, "only one controlnet is supported at the moment").
FLUX_GENERAL_INPUTS = FLUX_INPUTS | {"loras", "controlnets", "controlnet_unions", "image_size"}
CONTROLNET_FIELDS = {"path", "image_url", "mask_url", "conditioning_scale", "start_percentage", "end_percentage",
                     "config_url", "variant", "ip_adapter_index"}
CONTENT_POLICY = "The content could not be processed because it contained material flagged by a content checker."


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class FakeFal(FakeProvider):
    name = "fal"
    # The seed the result reports; None: the requested one (or 42 when none was sent), as fal does.
    reported_seed: int | None = None

    def __init__(self, knobs: Knobs | None = None):
        # Fixed key: a JWKS cached by URL stays right even if a later fake reuses the port.
        self.signing_key = Ed25519PrivateKey.from_private_bytes(b"fake-fal-webhook-signing-key-32b")
        self.forger_key = Ed25519PrivateKey.generate()
        self.control_images: list[bytes] = []  # each ControlNet image received, decoded
        super().__init__(knobs)

    def jwks(self) -> dict[str, Any]:
        pub = self.signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": _b64url(pub), "kid": "fake-1", "use": "sig"}]}

    def routes(self) -> list:
        return [
            Route("/.well-known/jwks.json", self.jwks_endpoint, methods=["GET"]),
            Route("/cdn/{id}/{index}", self.output, methods=["GET"]),
            Route("/{owner}/{app}/requests/{id}/status", self.status, methods=["GET"]),
            Route("/{owner}/{app}/requests/{id}/cancel", self.cancel, methods=["PUT"]),
            Route("/{owner}/{app}/requests/{id}", self.result, methods=["GET"]),
            Route("/{owner}/{app}/{rest:path}", self.submit, methods=["POST"]),
            Route("/{owner}/{app}", self.submit, methods=["POST"]),
        ]

    def _auth(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Key {KEY}":
            return JSONResponse({"detail": "Invalid Key authorization header format. Expected '<key_id>:<key_secret>'."},
                                status_code=401)
        return None

    def _urls(self, owner: str, app: str, rid: str) -> dict[str, str]:
        base = f"{self.url}/{owner}/{app}/requests/{rid}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    def _state(self, job: Job) -> str:
        if job.canceled or job.done():
            return "COMPLETED"
        return "IN_QUEUE" if time.monotonic() - job.created < job.extra.get("queue_s", 0.0) else "IN_PROGRESS"

    def _output(self, job: Job) -> dict[str, Any]:
        return {"images": [{"url": f"{self.url}/cdn/{job.id}/{i}", "width": 0, "height": 0, "content_type": "image/png",
                            "file_name": f"{i}.png", "file_size": len(b)} for i, b in enumerate(job.images)],
                "seed": self.reported_seed if self.reported_seed is not None else job.params.get("seed") or 42, "has_nsfw_concepts": [False] * len(job.images),
                "prompt": job.params.get("prompt", ""), "timings": {"inference": job.ready_at - job.created}}

    def _webhook(self, job: Job, forged: bool) -> tuple[dict[str, str], bytes]:
        if job.error:
            payload = {"request_id": job.id, "gateway_request_id": job.id, "status": "ERROR",
                       "error": "Invalid status code: 422",
                       "payload": {"detail": [{"loc": ["body", "prompt"], "msg": CONTENT_POLICY,
                                               "type": "content_policy_violation"}]}}
        else:
            payload = {"request_id": job.id, "gateway_request_id": job.id, "status": "OK", "payload": self._output(job)}
        body = json.dumps(payload).encode()
        ts = str(int(time.time()))
        msg = "\n".join([job.id, USER_ID, ts, hashlib.sha256(body).hexdigest()]).encode()
        key = self.forger_key if forged else self.signing_key
        return {"X-Fal-Webhook-Request-Id": job.id, "X-Fal-Webhook-User-Id": USER_ID, "X-Fal-Webhook-Timestamp": ts,
                "X-Fal-Webhook-Signature": key.sign(msg).hex()}, body

    # ------------------------------------------------------------------ endpoints

    async def jwks_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.jwks())

    async def submit(self, request: Request) -> Response:
        self.stats["submits"] += 1
        if (denied := self._auth(request)) is not None:
            return denied
        if fault := self.next_fault(limited=True):
            return await self.play_fault(fault, {"detail": "Too many requests", "error_type": "rate_limited"})
        owner, app = request.path_params["owner"], request.path_params["app"]
        rest = request.path_params.get("rest", "")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"detail": [{"loc": ["body"], "msg": "Invalid JSON", "type": "value_error.jsondecode"}]},
                                status_code=422)
        schema = FLUX_GENERAL_INPUTS if app == "flux-general" else FLUX_INPUTS if "flux" in app else SDXL_INPUTS
        errors = [{"loc": ["body", k], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
                  for k in body if k not in schema]
        if "controlnets" in body and schema is FLUX_GENERAL_INPUTS:
            errors += await self._controlnet_errors(body["controlnets"])
        errors += [{"loc": ["body", k], "msg": "Field required", "type": "missing"} for k in ("image_url", "prompt")
                   if k not in body]
        if "strength" in body and not 0 < float(body["strength"]) <= 1:
            errors.append({"loc": ["body", "strength"], "msg": "Input should be less than or equal to 1",
                           "type": "less_than_equal"})
        if errors:
            return JSONResponse({"detail": errors}, status_code=422)
        try:
            source = await fetch_url(body["image_url"])
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"detail": [{"loc": ["body", "image_url"], "msg": f"could not load image: {exc}",
                                             "type": "image_load_error"}]}, status_code=422)
        size = body.get("image_size") if isinstance(body.get("image_size"), dict) else {}
        req = neutral_request(body["prompt"], strength=body.get("strength", 0.95), seed=body.get("seed"),
                              negative=body.get("negative_prompt", ""), guidance=body.get("guidance_scale", 7.5),
                              width=int(size.get("width", 0)), height=int(size.get("height", 0)))
        self.log(request, body=body, subpath=rest, query=dict(request.query_params))
        job = self.new_job({**body, "model": f"{owner}/{app}/{rest}"}, source=source, request=req,
                           count=int(body.get("num_images", 1)), webhook=request.query_params.get("fal_webhook"))
        if job.webhook:
            self.deliver_later(job, job.webhook, self._webhook)
        if self.malformed_now():
            return Response('{"status": "IN_QUEUE", "request_id": "', media_type="application/json")
        if job.webhook:
            # fal's documented answer to a submit with `fal_webhook`: the ids only, no URLs.
            return JSONResponse({"request_id": job.id, "gateway_request_id": job.id})
        return JSONResponse({"status": "IN_QUEUE", "request_id": job.id, "gateway_request_id": job.id,
                             **self._urls(owner, app, job.id), "queue_position": 0})

    async def _controlnet_errors(self, controlnets: Any) -> list[dict[str, Any]]:
        """FastAPI-style errors for a `controlnets` list that is not fal's shape (each control image is loaded)."""
        def error(loc: list, msg: str, kind: str) -> dict[str, Any]:
            return {"loc": ["body", "controlnets", *loc], "msg": msg, "type": kind}

        if not isinstance(controlnets, list):
            return [error([], "Input should be a valid list", "list_type")]
        if len(controlnets) > 1:
            return [error([], "only one controlnet is supported at the moment", "value_error")]
        errors = []
        for i, cn in enumerate(controlnets):
            if not isinstance(cn, dict):
                errors.append(error([i], "Input should be a valid dictionary", "dict_type"))
                continue
            errors += [error([i, k], "Extra inputs are not permitted", "extra_forbidden") for k in cn if k not in CONTROLNET_FIELDS]
            errors += [error([i, k], "Field required", "missing") for k in ("path", "image_url") if not cn.get(k)]
            scale = cn.get("conditioning_scale", 1.0)
            if not isinstance(scale, (int, float)) or isinstance(scale, bool):
                errors.append(error([i, "conditioning_scale"], "Input should be a valid number", "float_type"))
            if cn.get("image_url"):
                try:
                    self.control_images.append(await fetch_url(cn["image_url"]))
                except Exception as exc:  # noqa: BLE001
                    errors.append(error([i, "image_url"], f"could not load image: {exc}", "image_load_error"))
        return errors

    def _job(self, request: Request) -> Job | None:
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return None
        owner, app = request.path_params["owner"], request.path_params["app"]
        # Only {owner}/{app}: a URL rebuilt with the model's subpath does not resolve.
        return job if job.params["model"].startswith(f"{owner}/{app}/") else None

    async def status(self, request: Request) -> Response:
        self.stats["polls"] += 1
        if (denied := self._auth(request)) is not None:
            return denied
        if fault := self.next_fault(limited=False):
            return await self.play_fault(fault, {"detail": "Too many requests"})
        job = self._job(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        state = self._state(job)
        owner, app = request.path_params["owner"], request.path_params["app"]
        body: dict[str, Any] = {"status": state, "request_id": job.id, **self._urls(owner, app, job.id)}
        if state == "IN_QUEUE":
            body["queue_position"] = 0
        else:
            body["logs"] = [] if request.query_params.get("logs") == "1" else None
        if state == "COMPLETED":
            body["metrics"] = {"inference_time": job.ready_at - job.created}
            if job.error:
                body["error"], body["error_type"] = CONTENT_POLICY, "content_policy_violation"
            return JSONResponse(body, status_code=200)
        return JSONResponse(body, status_code=202)

    async def result(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if fault := self.next_fault(limited=False):
            return await self.play_fault(fault, {"detail": "Too many requests"})
        job = self._job(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        if not job.done():
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
        if job.error:
            return JSONResponse({"detail": [{"loc": ["body", "prompt"], "msg": CONTENT_POLICY,
                                             "type": "content_policy_violation"}]}, status_code=422)
        if self.malformed_now():
            return Response('{"images": [', media_type="application/json")
        return JSONResponse(self._output(job))

    async def cancel(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        if job.done():
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        job.canceled = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    async def output(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["id"])
        index = int(request.path_params["index"])
        if job is None or index >= len(job.images):
            return Response(status_code=404)
        served = self.output_bytes(job.images[index])
        if isinstance(served, int):
            return Response(status_code=served)
        return Response(served, media_type="image/png")


def new_request_id() -> str:
    return str(uuid.uuid4())
