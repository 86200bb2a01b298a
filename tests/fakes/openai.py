"""Fake OpenAI Images: `POST /v1/images/edits`, multipart, base64 outputs, synchronous.

Wire format as in reference/providers.md §4: `image` or repeated `image[]`
parts, `prompt`, `model`, `n`, `size`, `quality`, `output_format`,
`input_fidelity`, …; unknown fields (strength, seed, …) get OpenAI's 400
`unknown_parameter`; the safety system answers 400 `moderation_blocked`; 429
carries `retry-after` and the `x-ratelimit-*` headers. Output is `data[].b64_json`.
"""

from __future__ import annotations

import asyncio
import base64
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeProvider, Knobs, neutral_request

TOKEN = "sk-fake-openai"
FIELDS = {"image", "image[]", "prompt", "mask", "model", "n", "size", "quality", "background", "output_format",
          "output_compression", "input_fidelity", "response_format", "stream", "partial_images", "user"}
MODELS = {"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "dall-e-2"}
SIZES = {"1024x1024", "1536x1024", "1024x1536", "auto"}


def _error(status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
           code: str | None = None, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status, headers=headers)


class FakeOpenAI(FakeProvider):
    name = "openai"

    def __init__(self, knobs: Knobs | None = None):
        super().__init__(knobs)

    def routes(self) -> list:
        return [Route("/v1/images/edits", self.edits, methods=["POST"])]

    async def edits(self, request: Request) -> Response:
        self.stats["submits"] += 1
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        if fault := self.next_fault(limited=True):
            if fault.startswith("429"):
                self.stats["429"] += 1
                wait = float(fault.split(":")[1]) if ":" in fault else 1.0
                headers = {"x-ratelimit-limit-requests": str(int(self.knobs.rate_limit_rpm or 0)),
                           "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": f"{wait:.3f}s"}
                if self.knobs.send_retry_after:
                    headers["retry-after-ms"] = str(int(wait * 1000))
                return _error(429, "Rate limit reached for images per min. Please try again later.",
                              type_="requests", code="rate_limit_exceeded", headers=headers)
            return await self.play_fault(fault, {})
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _error(400, "Invalid Content-Type header (application/json), expected multipart/form-data.")
        form = await request.form()
        for key in form.keys():
            if key not in FIELDS:
                return _error(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
        images = form.getlist("image[]") or form.getlist("image")
        if not images:
            return _error(400, "Missing required parameter: 'image'.", param="image", code="missing_required_parameter")
        model = str(form.get("model") or "gpt-image-1.5")
        if model not in MODELS:
            return _error(400, f"Invalid value: '{model}'. Supported values are: {', '.join(sorted(MODELS))}.",
                          param="model", code="invalid_value")
        prompt = str(form.get("prompt") or "")
        if not prompt:
            return _error(400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
        n = int(form.get("n") or 1)
        if not 1 <= n <= 10:
            return _error(400, f"Invalid 'n': integer above maximum value. Expected a value <= 10, but got {n} instead.",
                          param="n", code="integer_above_max_value")
        size = str(form.get("size") or "auto")
        if size not in SIZES and not (model == "gpt-image-2" and _free_size(size)):
            return _error(400, f"Invalid value: '{size}'. Supported values are: {', '.join(sorted(SIZES))}.",
                          param="size", code="invalid_value")
        if form.get("response_format") and model != "dall-e-2":
            return _error(400, "Unknown parameter: 'response_format'.", param="response_format", code="unknown_parameter")
        fidelity = form.get("input_fidelity")
        if fidelity is not None and fidelity not in ("high", "low"):
            return _error(400, f"Invalid value: '{fidelity}'. Supported values are: 'high' and 'low'.",
                          param="input_fidelity", code="invalid_value")
        source = await images[0].read()
        self.log(request, fields={k: v for k, v in form.items() if isinstance(v, str)}, images=len(images))
        await asyncio.sleep(self.knobs.latency_s)
        strength = 0.4 if fidelity == "high" else 0.8
        w, h = (int(x) for x in size.split("x")) if "x" in size else (0, 0)
        req = neutral_request(prompt, strength=strength, width=w if w <= 256 else 0, height=h if h <= 256 else 0)
        job = self.new_job({"fields": dict(form)}, source=source, request=req, count=n)
        if job.error:
            return _error(400, "Your request was rejected as a result of our safety system. Your request may contain "
                          "content that is not allowed by our safety system.", type_="image_generation_user_error",
                          code="moderation_blocked")
        data = []
        for img in job.images:
            served = self.output_bytes(img)
            if isinstance(served, int):
                return _error(served, "The server had an error while processing your request.", type_="server_error")
            data.append({"b64_json": base64.b64encode(served).decode(), "revised_prompt": None, "url": None})
        if self.malformed_now():
            return Response('{"created": 1, "data": [', media_type="application/json")
        return JSONResponse({"created": int(time.time()), "data": data, "background": "opaque",
                             "output_format": str(form.get("output_format") or "png"), "quality": "low", "size": size,
                             "usage": {"input_tokens": 50, "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
                                       "output_tokens": 272 * n, "total_tokens": 50 + 272 * n}},
                            headers={"x-request-id": f"req_{job.id}"})


def _free_size(size: str) -> bool:
    try:
        w, h = (int(x) for x in size.split("x"))
    except ValueError:
        return False
    return w % 16 == 0 and h % 16 == 0 and w <= 3840 and h <= 3840
