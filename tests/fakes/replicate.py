"""Fake Replicate: predictions (model, version and deployment forms), Prefer: wait, files, signed webhooks.

Wire format as in reference/providers.md §1: `201` + prediction object with
`urls.get`, `Preference-Applied: wait` and data-URI outputs in sync mode, 422
`invalid_fields` for inputs the model's schema lacks (SDXL's schema here), 429
`{"detail": "Request was throttled…"}`, Standard Webhooks signatures (HMAC-SHA256
over `id.timestamp.body`, key = base64 after `whsec_`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeProvider, Job, Knobs, fetch_url, neutral_request

TOKEN = "r8_fake_token"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"fake-replicate-signing-key-32byt").decode()

SDXL_INPUTS = {
    "prompt", "negative_prompt", "image", "mask", "width", "height", "num_outputs", "scheduler",
    "num_inference_steps", "guidance_scale", "prompt_strength", "seed", "refine", "high_noise_frac",
    "apply_watermark", "disable_safety_checker", "lora_scale",
}
TOP_LEVEL = {"version", "input", "webhook", "webhook_events_filter", "webhook_completed", "stream"}
NSFW = "NSFW content detected. Try running it again, or try a different prompt."


def sign(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


class FakeReplicate(FakeProvider):
    name = "replicate"

    def __init__(self, knobs: Knobs | None = None, *, webhook_secret: str = WEBHOOK_SECRET):
        self.webhook_secret = webhook_secret
        self.files: dict[str, bytes] = {}
        super().__init__(knobs)

    def routes(self) -> list:
        return [
            Route("/v1/models/{owner}/{name}/predictions", self.create, methods=["POST"]),
            Route("/v1/deployments/{owner}/{name}/predictions", self.create, methods=["POST"]),
            Route("/v1/predictions", self.create, methods=["POST"]),
            Route("/v1/predictions", self.list_predictions, methods=["GET"]),
            Route("/v1/predictions/{id}", self.get, methods=["GET"]),
            Route("/v1/predictions/{id}/cancel", self.cancel, methods=["POST"]),
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/v1/files/{id}/download", self.download_file, methods=["GET"]),
            Route("/v1/webhooks/default/secret", self.secret, methods=["GET"]),
            Route("/delivery/{id}/{index}", self.output, methods=["GET"]),
        ]

    # ------------------------------------------------------------------ helpers

    def _auth(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"title": "Unauthenticated", "detail": "You did not pass a valid authentication token",
                                 "status": 401}, status_code=401)
        return None

    def _invalid(self, errors: list[tuple[str, str, str]]) -> Response:
        detail = "\n".join(f"- {f}: {d}" for _, f, d in errors)
        return JSONResponse({"title": "Input validation failed", "detail": detail, "status": 422,
                             "invalid_fields": [{"type": t, "field": f, "description": d} for t, f, d in errors]},
                            status_code=422)

    def prediction(self, job: Job, *, data_uris: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if job.canceled:
            status = "canceled"
        elif not job.done():
            status = "starting" if now - job.created < job.extra.get("start_after", 0.01) else "processing"
        else:
            status = "failed" if job.error else "succeeded"
        output = None
        if status == "succeeded":
            if data_uris:
                output = ["data:image/png;base64," + base64.b64encode(b).decode() for b in job.images]
            else:
                output = [f"{self.url}/delivery/{job.id}/{i}" for i in range(len(job.images))]
        created = job.extra["created_wall"]
        return {
            "id": job.id, "model": job.params.get("model", ""), "version": job.params.get("version", ""),
            "input": job.params["input"], "logs": "", "error": NSFW if status == "failed" else None,
            "status": status, "output": output, "data_removed": False,
            "metrics": {"predict_time": round(job.ready_at - job.created, 3)} if status == "succeeded" else {},
            "created_at": _iso(created), "started_at": _iso(created),
            "completed_at": _iso(created + (job.ready_at - job.created)) if status in ("succeeded", "failed") else None,
            "urls": {"get": f"{self.url}/v1/predictions/{job.id}", "cancel": f"{self.url}/v1/predictions/{job.id}/cancel",
                     "web": f"{self.url}/p/{job.id}"},
            "webhook": job.webhook, "webhook_completed": None,
        }

    def _webhook(self, job: Job, forged: bool) -> tuple[dict[str, str], bytes]:
        body = json.dumps(self.prediction(job)).encode()
        msg_id = f"msg_{uuid.uuid4().hex}"
        ts = str(int(time.time()))
        secret = WEBHOOK_SECRET.replace("whsec_", "whsec_AAAA") if forged else self.webhook_secret
        return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sign(secret, msg_id, ts, body)}, body

    # ------------------------------------------------------------------ endpoints

    async def create(self, request: Request) -> Response:
        self.stats["submits"] += 1
        if (denied := self._auth(request)) is not None:
            return denied
        fault = self.next_fault(limited=True)
        if fault:
            secs = fault.split(":")[1] if ":" in fault else "1"
            return await self.play_fault(
                fault, {"detail": f"Request was throttled. Your rate limit resets in ~{max(1, round(float(secs)))}s.",
                        "status": 429, "title": "Too Many Requests"})
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"detail": "Invalid JSON body", "status": 400}, status_code=400)
        errors = [("additional_property_not_allowed", k, f"Additional property {k} is not allowed")
                  for k in body if k not in TOP_LEVEL]
        if request.url.path == "/v1/predictions" and "version" not in body:
            errors.append(("required", "version", "version is required"))
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            errors.append(("required", "input", "input is required"))
            inputs = {}
        errors += [("additional_property_not_allowed", "input", f"Additional property {k} is not allowed")
                   for k in inputs if k not in SDXL_INPUTS]
        if "prompt_strength" in inputs and not 0 <= inputs["prompt_strength"] <= 1:
            errors.append(("less_equal", "input.prompt_strength", "Must be less than or equal to 1"))
        if not 1 <= int(inputs.get("num_outputs", 1)) <= 4:
            errors.append(("less_equal", "input.num_outputs", "Must be less than or equal to 4"))
        if "image" not in inputs:
            errors.append(("required", "input.image", "image is required for image-to-image"))
        if errors:
            return self._invalid(errors)
        filt = body.get("webhook_events_filter")
        if filt is not None and (not isinstance(filt, list) or any(e not in ("start", "output", "logs", "completed") for e in filt)):
            return self._invalid([("enum", "webhook_events_filter", "items must be one of start, output, logs, completed")])
        try:
            source = await self._input_bytes(inputs["image"])
        except ValueError as exc:
            return self._invalid([("format", "input.image", f"could not read image: {exc}")])
        req = neutral_request(inputs.get("prompt", ""), strength=inputs.get("prompt_strength", 0.8), seed=inputs.get("seed"),
                              negative=inputs.get("negative_prompt", ""), guidance=inputs.get("guidance_scale", 7.5),
                              width=int(inputs.get("width", 0)), height=int(inputs.get("height", 0)))
        self.log(request, body=body)
        job = await self.new_job_async({"input": inputs, "version": body.get("version", ""), "model": request.url.path},
                                       source=source, request=req, count=int(inputs.get("num_outputs", 1)),
                                       webhook=body.get("webhook"))
        job.extra["created_wall"] = time.time()
        if job.webhook and (filt is None or "completed" in filt):
            self.deliver_later(job, job.webhook, self._webhook)
        if (lost := await self.lose_answer()) is not None:
            return lost
        headers = {"Location": f"{self.url}/v1/predictions/{job.id}"}
        prefer = request.headers.get("prefer", "")
        data_uris = False
        if prefer.startswith("wait"):
            wait = 60.0
            if "=" in prefer:
                wait = float(prefer.split("=", 1)[1])
            if not 1 <= wait <= 60:
                return self._invalid([("range", "Prefer", "wait must be between 1 and 60 seconds")])
            await asyncio.sleep(max(0.0, min(wait, job.ready_at - time.monotonic())))
            headers["Preference-Applied"] = f"wait={int(wait)}" if "=" in prefer else "wait"
            data_uris = True
        if self.malformed_now():
            return Response('{"id": "' + job.id, status_code=201, media_type="application/json")
        return JSONResponse(self.prediction(job, data_uris=data_uris), status_code=201, headers=headers)

    async def _input_bytes(self, value: str) -> bytes:
        prefix = f"{self.url}/v1/files/"
        if value.startswith(prefix):
            file_id = value[len(prefix):].split("/")[0]
            if file_id not in self.files:
                raise ValueError(f"unknown file {file_id}")
            return self.files[file_id]
        return await fetch_url(value)

    async def get(self, request: Request) -> Response:
        self.stats["polls"] += 1
        if (denied := self._auth(request)) is not None:
            return denied
        if fault := self.next_fault(limited=False):
            return await self.play_fault(fault, {"detail": "Request was throttled.", "status": 429})
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return JSONResponse({"title": "Not found", "detail": "Not found.", "status": 404}, status_code=404)
        if self.malformed_now():
            return Response('{"status": ', media_type="application/json")
        return JSONResponse(self.prediction(job))

    async def list_predictions(self, request: Request) -> Response:
        """GET /v1/predictions: every prediction, newest first, in pages of 100 (`?cursor=<page>`)."""
        self.stats["lists"] = self.stats.get("lists", 0) + 1
        if (denied := self._auth(request)) is not None:
            return denied
        if fault := self.next_fault(limited=False):
            return await self.play_fault(fault, {"detail": "Request was throttled.", "status": 429})
        page = int(request.query_params.get("cursor", "0"))
        jobs = sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)[page * 100:(page + 1) * 100]
        more = len(self.jobs) > (page + 1) * 100
        return JSONResponse({"previous": None, "next": f"{self.url}/v1/predictions?cursor={page + 1}" if more else None,
                             "results": [self.prediction(j) for j in jobs]})

    async def cancel(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return JSONResponse({"detail": "Not found.", "status": 404}, status_code=404)
        if not job.done():
            job.canceled = True
        return JSONResponse(self.prediction(job))

    async def upload(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        form = await request.form()
        part = form.get("content")
        if part is None or isinstance(part, str):
            return self._invalid([("required", "content", "a multipart file field named content is required")])
        file_id = uuid.uuid4().hex[:20]
        data = await part.read()
        self.files[file_id] = data
        self.log(request, file=file_id, size=len(data))
        return JSONResponse({"id": file_id, "name": part.filename, "content_type": part.content_type, "size": len(data),
                             "urls": {"get": f"{self.url}/v1/files/{file_id}"}}, status_code=201)

    async def download_file(self, request: Request) -> Response:
        data = self.files.get(request.path_params["id"])
        return Response(data, media_type="application/octet-stream") if data else Response(status_code=404)

    async def secret(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return JSONResponse({"key": self.webhook_secret})

    async def output(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["id"])
        index = int(request.path_params["index"])
        if job is None or index >= len(job.images):
            return Response(status_code=404)
        served = self.output_bytes(job.images[index])
        if isinstance(served, int):
            return Response(status_code=served)
        return Response(served, media_type="image/png")
