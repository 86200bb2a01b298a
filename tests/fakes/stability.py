"""Fake Stability AI v2beta: sd3 / ultra image-to-image, synchronous, multipart only.

Wire format as in reference/providers.md §3: multipart/form-data (anything else
is a 400), `mode=image-to-image` with a required `strength` on sd3, `Accept:
image/*` (raw bytes + `finish-reason` / `seed` headers) or `application/json`
(`{"image", "finish_reason", "seed"}`), errors `{"id", "name", "errors": [...]}`,
413 over 10 MiB. A prompt with the filter word comes back with finish reason
CONTENT_FILTERED; one with `moderated` is refused with 403 content_moderation.
"""

from __future__ import annotations

import asyncio
import base64
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeProvider, Knobs, neutral_request, render

TOKEN = "sk-fake-stability"
MAX_BYTES = 10 * 1024 * 1024
FIELDS = {
    "sd3": {"prompt", "mode", "image", "strength", "aspect_ratio", "model", "seed", "output_format", "negative_prompt",
            "cfg_scale", "style_preset"},
    "ultra": {"prompt", "negative_prompt", "aspect_ratio", "seed", "output_format", "image", "strength", "style_preset"},
}
SD3_MODELS = {"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3-large", "sd3-large-turbo", "sd3-medium"}


def _error(status: int, name: str, *errors: str) -> Response:
    return JSONResponse({"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}, status_code=status)


class FakeStability(FakeProvider):
    name = "stability"

    def __init__(self, knobs: Knobs | None = None):
        super().__init__(knobs)

    def routes(self) -> list:
        return [Route("/v2beta/stable-image/generate/{endpoint}", self.generate, methods=["POST"])]

    async def generate(self, request: Request) -> Response:
        self.stats["submits"] += 1
        endpoint = request.path_params["endpoint"]
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return _error(401, "unauthorized", "authorization: invalid or missing API key")
        if endpoint not in FIELDS:
            return _error(404, "not_found", f"endpoint {endpoint} has no image-to-image")
        if int(request.headers.get("content-length", "0")) > MAX_BYTES:
            return _error(413, "payload_too_large", "payload too large: the maximum request size is 10MiB")
        if fault := self.next_fault(limited=True):
            return await self.play_fault(fault, {"id": uuid.uuid4().hex, "name": "rate_limit_exceeded", "errors": [
                "You have exceeded the rate limit of 150 requests within a 10 second period"]})
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _error(400, "bad_request", "content-type: must be multipart/form-data")
        accept = request.headers.get("accept", "image/*")
        if accept not in ("image/*", "application/json"):
            return _error(400, "bad_request", "accept: must be image/* or application/json")
        form = await request.form()
        errors = [f"{k}: unexpected field" for k in form.keys() if k not in FIELDS[endpoint]]
        image = form.get("image")
        prompt = str(form.get("prompt") or "")
        if not prompt:
            errors.append("prompt: cannot be empty")
        if endpoint == "sd3":
            mode = form.get("mode", "text-to-image")
            if mode not in ("text-to-image", "image-to-image"):
                errors.append("mode: must be one of text-to-image, image-to-image")
            if mode == "image-to-image" and image is None:
                errors.append("image: required when mode is image-to-image")
            if mode == "image-to-image" and form.get("strength") is None:
                errors.append("strength: required when mode is image-to-image")
            if mode == "text-to-image" and image is not None:
                errors.append("image: only allowed when mode is image-to-image")
            model = form.get("model", "sd3.5-large")
            if model not in SD3_MODELS:
                errors.append(f"model: must be one of {', '.join(sorted(SD3_MODELS))}")
            if "turbo" in str(model) and form.get("negative_prompt"):
                errors.append("negative_prompt: not supported by turbo models")
        elif image is not None and form.get("strength") is None:
            errors.append("strength: required when image is given")
        if form.get("strength") is not None and not 0 <= float(form["strength"]) <= 1:
            errors.append("strength: must be between 0 and 1")
        if form.get("seed") is not None and not 0 <= int(form["seed"]) <= 4294967294:
            errors.append("seed: must be between 0 and 4294967294")
        if errors:
            return _error(400, "bad_request", *errors)
        source = await image.read() if image is not None and not isinstance(image, str) else b""
        self.log(request, fields={k: (v if isinstance(v, str) else f"<file {len(source)} bytes>") for k, v in form.items()})
        if "moderated" in prompt.lower():
            return _error(403, "content_moderation", "Your request was flagged by our content moderation system, as a "
                          "result your request was denied and you were not charged.")
        await asyncio.sleep(self.knobs.latency_s)
        seed = int(form.get("seed") or 0) or self.rng.randrange(1, 2**31)
        req = neutral_request(prompt, strength=float(form.get("strength") or 0.8), seed=seed,
                              negative=str(form.get("negative_prompt") or ""), guidance=float(form.get("cfg_scale") or 7))
        job = self.new_job({"fields": dict(form)}, source=source, request=req, count=1)
        finish = "CONTENT_FILTERED" if job.error else "SUCCESS"
        data = job.images[0] if job.images else render(req, source, 1)[0]  # filtered: a (blurred, here plain) image
        served = self.output_bytes(data)
        if isinstance(served, int):
            return _error(served, "server_error", "an unexpected server error occurred")
        rid = uuid.uuid4().hex
        if accept == "application/json":
            if self.malformed_now():
                return Response('{"image": "', media_type="application/json")
            return JSONResponse({"image": base64.b64encode(served).decode(), "finish_reason": finish, "seed": seed},
                                headers={"x-request-id": rid})
        return Response(served, media_type="image/png",
                        headers={"finish-reason": finish, "seed": str(seed), "x-request-id": rid})
