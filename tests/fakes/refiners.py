"""A fake Replicate + Stability refiner service: the real wire formats, pixels done with Pillow.

Replicate side: POST /v1/models/{owner}/{name}/predictions (201, `urls.get`),
GET /v1/predictions/{id} (processing once, then succeeded), POST /v1/files,
output files served from /files/{id}.png on the same server. Models:

* `*real-esrgan*` — Lanczos by `scale`;
* `*gfpgan*` / `*codeformer*` — a recognisable edit: the image inverted;
* `*inpaint*` — paints the mask's white area solid magenta.

Stability side: POST /v2beta/stable-image/upscale/fast (4×, image bytes back),
POST /v2beta/stable-image/edit/inpaint (magenta where the mask is white).

`FakeRefinerServer` runs it with uvicorn on a free 127.0.0.1 port in a thread;
`fail_next` queues error answers (status, headers) to test retries and mapping.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from PIL import Image, ImageOps
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "r8_test_token"
STABILITY_KEY = "sk-test-key"
MAGENTA = (255, 0, 255)


@dataclass
class FakeState:
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (route kind, model or endpoint)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    fail_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _open(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def _paint_mask(image: Image.Image, mask: Image.Image) -> Image.Image:
    out = image.copy()
    out.paste(Image.new("RGB", image.size, MAGENTA), (0, 0), mask.convert("L").resize(image.size))
    return out


def run_model(model: str, inputs: dict[str, Any], images: dict[str, bytes]) -> bytes:
    if "esrgan" in model:
        img = _open(images["image"])
        s = float(inputs.get("scale", 4))
        return _png(img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.LANCZOS))
    if "gfpgan" in model or "codeformer" in model:
        img = _open(images.get("img") or images["image"])
        return _png(ImageOps.invert(img))
    if "inpaint" in model:
        return _png(_paint_mask(_open(images["image"]), _open(images["mask"])))
    raise KeyError(model)


def build_app(state: FakeState) -> Starlette:
    def _auth(request: Request, expected: str) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {expected}":
            return JSONResponse({"detail": "Unauthenticated"}, status_code=401)
        return None

    def _fault() -> Response | None:
        if state.fail_next:
            status, headers = state.fail_next.pop(0)
            return JSONResponse({"detail": f"injected {status}"}, status_code=status, headers=headers)
        return None

    def _read_input(value: Any) -> bytes | None:
        if isinstance(value, str) and value.startswith("data:"):
            return base64.b64decode(value.split(",", 1)[1])
        if isinstance(value, str) and "/files/" in value:
            return state.files[value.rsplit("/", 1)[1].split(".")[0]]
        return None

    async def create_prediction(request: Request) -> Response:
        if (denied := _auth(request, TOKEN)) or (denied := _fault()):
            return denied
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        body = await request.json()
        inputs = body.get("input", {})
        images = {k: data for k, v in inputs.items() if (data := _read_input(v)) is not None}
        plain = {k: v for k, v in inputs.items() if k not in images}
        state.calls.append(("replicate", model))
        state.inputs.append({"model": model, "inputs": plain, "image_keys": sorted(images), "prefer": request.headers.get("prefer")})
        pid = uuid.uuid4().hex[:12]
        base = str(request.base_url).rstrip("/")
        try:
            out = run_model(model, plain, images)
            state.files[pid] = out
            result = {"status": "succeeded", "output": f"{base}/files/{pid}.png", "error": None}
        except (KeyError, OSError) as exc:
            result = {"status": "failed", "output": None, "error": f"fake cannot run {model}: {exc}"}
        state.predictions[pid] = {
            "id": pid, "model": model, "version": "fake", "input": plain, "logs": "", "metrics": {},
            "urls": {"get": f"{base}/v1/predictions/{pid}", "cancel": f"{base}/v1/predictions/{pid}/cancel"},
            "created_at": "2026-01-01T00:00:00Z", "_result": result,
        }
        return JSONResponse(_view(pid, "starting"), status_code=201)

    def _view(pid: str, status: str) -> dict[str, Any]:
        p = {k: v for k, v in state.predictions[pid].items() if k != "_result"}
        if status == "done":
            return {**p, **state.predictions[pid]["_result"]}
        return {**p, "status": status, "output": None, "error": None}

    async def get_prediction(request: Request) -> Response:
        if denied := _auth(request, TOKEN):
            return denied
        pid = request.path_params["pid"]
        if pid not in state.predictions:
            return JSONResponse({"detail": "Not found"}, status_code=404)
        if denied := _fault():
            return denied
        state.polls[pid] = state.polls.get(pid, 0) + 1
        # The first poll still sees it running, so clients must really poll.
        return JSONResponse(_view(pid, "processing" if state.polls[pid] == 1 else "done"))

    async def upload_file(request: Request) -> Response:
        if denied := _auth(request, TOKEN):
            return denied
        form = await request.form()
        content = await form["content"].read()  # type: ignore[union-attr]
        fid = uuid.uuid4().hex[:12]
        state.files[fid] = content
        state.calls.append(("files", fid))
        base = str(request.base_url).rstrip("/")
        return JSONResponse({"id": fid, "size": len(content), "urls": {"get": f"{base}/files/{fid}.bin"}}, status_code=201)

    async def get_file(request: Request) -> Response:
        fid = request.path_params["name"].split(".")[0]
        if fid not in state.files:
            return Response(status_code=404)
        return Response(state.files[fid], media_type="image/png")

    async def stability(request: Request) -> Response:
        if (denied := _auth(request, STABILITY_KEY)) or (denied := _fault()):
            return denied
        form = await request.form()
        endpoint = request.url.path
        state.calls.append(("stability", endpoint))
        image = _open(await form["image"].read())  # type: ignore[union-attr]
        state.inputs.append({"endpoint": endpoint, "fields": {k: v for k, v in form.items() if isinstance(v, str)}})
        if endpoint.endswith("/upscale/fast"):
            if not (32 <= min(image.size) and max(image.size) <= 1536):
                return JSONResponse({"id": "x", "name": "bad_request", "errors": ["image size"]}, status_code=400)
            out = image.resize((image.width * 4, image.height * 4), Image.Resampling.LANCZOS)
        else:
            out = _paint_mask(image, _open(await form["mask"].read()))  # type: ignore[union-attr]
        return Response(_png(out), media_type="image/png", headers={"finish-reason": "SUCCESS", "seed": "0"})

    return Starlette(
        routes=[
            Route("/v1/models/{owner}/{name}/predictions", create_prediction, methods=["POST"]),
            Route("/v1/predictions/{pid}", get_prediction, methods=["GET"]),
            Route("/v1/files", upload_file, methods=["POST"]),
            Route("/files/{name}", get_file, methods=["GET"]),
            Route("/v2beta/stable-image/upscale/fast", stability, methods=["POST"]),
            Route("/v2beta/stable-image/edit/inpaint", stability, methods=["POST"]),
        ]
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeRefinerServer:
    """The fake on a free 127.0.0.1 port, in a background thread (a context manager)."""

    def __init__(self) -> None:
        self.state = FakeState()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(build_app(self.state), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> "FakeRefinerServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake refiner server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
