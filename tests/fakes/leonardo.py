"""Fake Leonardo.ai REST v1: presigned init-image upload, generations, polling, bearer-token webhooks.

Wire format as in reference/providers.md §5: `POST /init-image` answers with a
presigned S3 form whose `fields` is a JSON *string*; the upload goes to that URL
as multipart (fields, then `file`), without auth (an Authorization header gets
S3's "Only one auth mechanism allowed"), answers 204 and expires after 2 minutes;
`POST /generations` takes `modelId` (camelCase) and snake_case fields,
`init_strength` 0.1–0.9 (inverted: high keeps the source); unknown fields get a
Hasura-style 400. Polling answers `generations_by_pk.generated_images`; the
webhook (configured per API key, here per fake) sends `data.object.images` with
`authorization: Bearer <webhook callback key>` and no signature.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeProvider, Job, Knobs, neutral_request

TOKEN = "6f1c2d8e-0000-4000-8000-00000000fake"
CALLBACK_KEY = "leonardo-callback-key-fake"
MODEL_ID = "b24e16ff-06e3-43eb-8d33-4416c2d75876"
PRESIGN_TTL_S = 120
GENERATION_FIELDS = {"prompt", "modelId", "init_image_id", "init_strength", "negative_prompt", "guidance_scale",
                     "num_inference_steps", "num_images", "seed", "width", "height", "init_generation_image_id",
                     "alchemy", "presetStyle", "public", "scheduler", "sd_version", "photoReal", "contrast", "ultra"}


def _hasura(message: str, code: str = "validation-failed", status: int = 400) -> Response:
    return JSONResponse({"error": message, "path": "$", "code": code}, status_code=status)


class FakeLeonardo(FakeProvider):
    name = "leonardo"

    def __init__(self, knobs: Knobs | None = None, *, webhook_url: str | None = None, callback_key: str = CALLBACK_KEY):
        self.webhook_url = webhook_url
        self.callback_key = callback_key
        self.uploads: dict[str, dict[str, Any]] = {}  # init image id -> {"fields", "created", "data"}
        super().__init__(knobs)

    def routes(self) -> list:
        return [
            Route("/api/rest/v1/init-image", self.init_image, methods=["POST"]),
            Route("/api/rest/v1/generations", self.create, methods=["POST"]),
            Route("/api/rest/v1/generations/{id}", self.get, methods=["GET"]),
            Route("/s3-upload/", self.s3_upload, methods=["POST"]),
            Route("/cdn/{id}/{index}", self.output, methods=["GET"]),
        ]

    def _auth(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return _hasura("Invalid API key", code="invalid-jwt", status=401)
        return None

    async def _json(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _hasura("invalid JSON body", code="invalid-json")
        return body if isinstance(body, dict) else _hasura("expected a JSON object")

    async def init_image(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if fault := self.next_fault(limited=False):
            return await self.play_fault(fault, {"error": "rate limit exceeded", "code": "rate-limit"})
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        for key in body:
            if key != "extension":
                return _hasura(f'unexpected variable "{key}"', code="unexpected")
        if body.get("extension") not in ("png", "jpg", "jpeg", "webp"):
            return _hasura('expected "extension" to be one of png, jpg, jpeg, webp')
        init_id = str(uuid.uuid4())
        key = f"users/fake/initImages/{init_id}.{body['extension']}"
        fields = {"Content-Type": f"image/{body['extension']}", "bucket": "fake-bucket", "key": key,
                  "Policy": uuid.uuid4().hex, "X-Amz-Signature": uuid.uuid4().hex, "X-Amz-Algorithm": "AWS4-HMAC-SHA256"}
        self.uploads[init_id] = {"fields": fields, "created": time.monotonic(), "data": None}
        return JSONResponse({"uploadInitImage": {"id": init_id, "url": f"{self.url}/s3-upload/",
                                                 "fields": json.dumps(fields), "key": key, "__typename": "UploadInitImageOutput"}})

    async def s3_upload(self, request: Request) -> Response:
        if "authorization" in request.headers:
            return Response("<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the "
                            "X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization "
                            "header should be specified</Message></Error>", status_code=400, media_type="application/xml")
        form = await request.form()
        key = form.get("key")
        upload = next((u for u in self.uploads.values() if u["fields"]["key"] == key), None)
        if upload is None or any(form.get(k) != v for k, v in upload["fields"].items()):
            return Response("<Error><Code>AccessDenied</Code><Message>Invalid according to Policy</Message></Error>",
                            status_code=403, media_type="application/xml")
        if time.monotonic() - upload["created"] > PRESIGN_TTL_S:
            return Response("<Error><Code>AccessDenied</Code><Message>Invalid according to Policy: Policy expired."
                            "</Message></Error>", status_code=403, media_type="application/xml")
        part = form.get("file")
        if part is None or isinstance(part, str):
            return Response("<Error><Code>InvalidArgument</Code><Message>POST requires exactly one file upload per "
                            "request.</Message></Error>", status_code=400, media_type="application/xml")
        upload["data"] = await part.read()
        return Response(status_code=204)

    async def create(self, request: Request) -> Response:
        self.stats["submits"] += 1
        if (denied := self._auth(request)) is not None:
            return denied
        if fault := self.next_fault(limited=True):
            return await self.play_fault(fault, {"error": "rate limit exceeded", "path": "$", "code": "rate-limit"})
        body = await self._json(request)
        if isinstance(body, Response):
            return body
        for key in body:
            if key not in GENERATION_FIELDS:
                return _hasura(f'unexpected variable "{key}"', code="unexpected")
        checks = [
            ("prompt" in body and body["prompt"], 'expected "prompt" to be a non-empty string'),
            (0.1 <= body.get("init_strength", 0.5) <= 0.9, '"init_strength" must be between 0.1 and 0.9'),
            (1 <= body.get("guidance_scale", 7) <= 20, '"guidance_scale" must be between 1 and 20'),
            (10 <= body.get("num_inference_steps", 15) <= 60, '"num_inference_steps" must be between 10 and 60'),
            (1 <= body.get("num_images", 1) <= 8, '"num_images" must be between 1 and 8'),
        ]
        w, h = int(body.get("width", 1024)), int(body.get("height", 768))
        checks += [
            (32 <= w <= 1536 and 32 <= h <= 1536 and w % 8 == 0 and h % 8 == 0,
             '"width" and "height" must be multiples of 8 between 32 and 1536'),
            (body.get("num_images", 1) <= 4 or max(w, h) <= 768, '"num_images" must be at most 4 when a side is over 768'),
        ]
        for ok, message in checks:
            if not ok:
                return _hasura(message)
        init = self.uploads.get(body.get("init_image_id", ""))
        if body.get("init_image_id") and (init is None or init["data"] is None):
            return _hasura("init image not found or not uploaded", code="unexpected")
        if self.knobs.content_filter_word in body["prompt"].lower():
            self.log(request, body=body)
            return _hasura("This request was flagged by our content moderation filter", code="content-moderation")
        self.log(request, body=body)
        req = neutral_request(body["prompt"], strength=1 - float(body.get("init_strength", 0.5)), seed=body.get("seed"),
                              negative=body.get("negative_prompt", ""), guidance=min(15, body.get("guidance_scale", 7)),
                              width=w if w <= 256 else 0, height=h if h <= 256 else 0)
        job = self.new_job(body, source=init["data"] if init else None, request=req, count=int(body.get("num_images", 1)))
        job.extra["created_ms"] = int(time.time() * 1000)
        if self.webhook_url:
            self.deliver_later(job, self.webhook_url, self._webhook)
        if self.malformed_now():
            return Response('{"sdGenerationJob": {"generationId": "', media_type="application/json")
        return JSONResponse({"sdGenerationJob": {"generationId": job.id, "apiCreditCost": 8 * job.params.get("num_images", 1)}})

    def _images(self, job: Job) -> list[dict[str, Any]]:
        return [{"id": f"{job.id}-{i}", "url": f"{self.url}/cdn/{job.id}/{i}", "nsfw": False, "likeCount": 0,
                 "motionMP4URL": None, "generationId": job.id} for i in range(len(job.images))]

    def _webhook(self, job: Job, forged: bool) -> tuple[dict[str, str], bytes]:
        body = {"type": "image_generation.complete", "object": "generation", "timestamp": int(time.time() * 1000),
                "api_version": "v1",
                "data": {"object": {"id": job.id, "status": "COMPLETE", "initImageId": job.params.get("init_image_id"),
                                    "initStrength": job.params.get("init_strength"), "seed": str(job.params.get("seed")),
                                    "modelId": job.params.get("modelId"), "images": self._images(job)}}}
        key = "not-the-callback-key" if forged else self.callback_key
        return {"authorization": f"Bearer {key}"}, json.dumps(body).encode()

    async def get(self, request: Request) -> Response:
        self.stats["polls"] += 1
        if (denied := self._auth(request)) is not None:
            return denied
        if fault := self.next_fault(limited=False):
            return await self.play_fault(fault, {"error": "rate limit exceeded", "code": "rate-limit"})
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return JSONResponse({"generations_by_pk": None})
        done = job.done()
        status = "FAILED" if done and job.error else "COMPLETE" if done else "PENDING"
        p = job.params
        if self.malformed_now():
            return Response('{"generations_by_pk": {', media_type="application/json")
        return JSONResponse({"generations_by_pk": {
            "id": job.id, "status": status, "generated_images": self._images(job) if status == "COMPLETE" else [],
            "initStrength": p.get("init_strength"), "guidanceScale": p.get("guidance_scale"),
            "imageWidth": p.get("width"), "imageHeight": p.get("height"), "inferenceSteps": p.get("num_inference_steps"),
            "modelId": p.get("modelId"), "negativePrompt": p.get("negative_prompt"), "seed": p.get("seed"),
            "prompt": p.get("prompt"), "createdAt": job.extra.get("created_ms")}})

    async def output(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["id"])
        index = int(request.path_params["index"])
        if job is None or index >= len(job.images):
            return Response(status_code=404)
        served = self.output_bytes(job.images[index])
        if isinstance(served, int):
            return Response(status_code=served)
        return Response(served, media_type="image/jpeg")
