"""What every fake provider shares: knobs, jobs, faults, rate limit, webhooks, a uvicorn runner.

A fake is a Starlette app that speaks one provider's wire format on 127.0.0.1.
The local engine's `render_variant` draws the pixels, so outputs are real,
decodable, seeded images. Knobs (all per fake instance, changeable mid-test):

- `latency_s`: how long a job takes before it is done;
- `rate_limit_rpm` / `rate_limit_burst`: a server-side token bucket on the
  job-creating endpoint; over it the fake answers 429 (with Retry-After unless
  `send_retry_after` is false) and counts it in `stats["429"]`;
- `faults`: a queue consumed one per API request: "429", "500", "503",
  "timeout" (hangs `hang_s`), "malformed" (a truncated JSON body);
  `output_faults`: consumed one per output download: "corrupt", "500";
- `error_rate_5xx`, `timeout_rate`, `rate_429`, `malformed_rate`, `corrupt_rate`: the
  same faults at random (seeded by `seed`), for benchmarks and the soak; a random
  429 asks for `retry_after_s`; `lost_answer_rate`: a submit is accepted (and
  billed), then its answer hangs `hang_s` and ends in a 504 (Replicate's fake);
- `content_filter_word`: a prompt containing it is refused the provider's way;
- `webhook`: "on_time", "late", "duplicate", "lost" or "forged"; or, per job at
  random, `webhook_lost_rate`, `webhook_duplicate_rate`, `webhook_forged_rate`
  (the rest as `webhook` says).

Each job records `extra["source_sha256"]`, so a test can tell two billed jobs
of one generation (same source bytes, same inputs) apart from two generations.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import httpx
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from brandforge.blocks.providers.local_engine import render_variant
from brandforge.models import GenerationRequest


@dataclass
class Knobs:
    latency_s: float = 0.05
    rate_limit_rpm: float | None = None
    rate_limit_burst: float | None = None
    send_retry_after: bool = True
    faults: list[str] = field(default_factory=list)
    output_faults: list[str] = field(default_factory=list)
    error_rate_5xx: float = 0.0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    corrupt_rate: float = 0.0
    rate_429: float = 0.0
    retry_after_s: float = 1.0
    lost_answer_rate: float = 0.0
    hang_s: float = 3.0
    content_filter_word: str = "forbidden"
    webhook: str = "on_time"
    webhook_late_s: float = 1.0
    webhook_lost_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_forged_rate: float = 0.0
    seed: int = 0
    # False: outputs are the source at the requested size with a seed-keyed tint, which costs the
    # host almost no CPU. A benchmark of the product uses it: a real provider renders elsewhere.
    styled: bool = True


@dataclass
class Job:
    id: str
    created: float
    ready_at: float
    params: dict[str, Any]
    images: list[bytes] = field(default_factory=list)
    error: str | None = None
    webhook: str | None = None
    canceled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def done(self) -> bool:
        return self.canceled or time.monotonic() >= self.ready_at


class FakeProvider:
    """State and helpers shared by the per-provider fakes; subclasses build `self.app`."""

    name = "fake"

    def __init__(self, knobs: Knobs | None = None):
        self.knobs = knobs or Knobs()
        self.jobs: dict[str, Job] = {}
        self.requests: list[dict[str, Any]] = []
        self.webhooks_sent: list[dict[str, Any]] = []
        self.stats: dict[str, int] = {"429": 0, "submits": 0, "accepted": 0, "5xx": 0, "polls": 0}
        self.rng = random.Random(self.knobs.seed)
        self._tokens: float | None = None
        self._tokens_at = time.monotonic()
        self._lock = threading.Lock()
        self.url = ""  # set by serve()
        self.app = Starlette(routes=self.routes())
        self._bg: set[asyncio.Task] = set()

    def routes(self) -> list:
        raise NotImplementedError

    # ------------------------------------------------------------------ faults and limits

    def take_token(self) -> float | None:
        """None when a request may go ahead, else the seconds until a token is free."""
        rpm = self.knobs.rate_limit_rpm
        if not rpm:
            return None
        rate = rpm / 60.0
        burst = self.knobs.rate_limit_burst or max(1.0, rate)
        with self._lock:
            now = time.monotonic()
            if self._tokens is None:
                self._tokens = burst
            self._tokens = min(burst, self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / rate

    def next_fault(self, *, limited: bool) -> str | None:
        """The fault to play for this API request, if any (queued first, then random, then the limit)."""
        if self.knobs.faults:
            return self.knobs.faults.pop(0)
        r = self.rng.random()
        k = self.knobs
        if r < k.error_rate_5xx:
            return "500"
        if r < k.error_rate_5xx + k.timeout_rate:
            return "timeout"
        if r < k.error_rate_5xx + k.timeout_rate + k.rate_429:
            return f"429:{k.retry_after_s:.3f}"
        if limited:
            wait = self.take_token()
            if wait is not None:
                return f"429:{wait:.3f}"
        return None

    async def play_fault(self, fault: str, body_429: dict, retry_after_header: bool = True) -> Response:
        if fault.startswith("429"):
            self.stats["429"] += 1
            wait = float(fault.split(":")[1]) if ":" in fault else 1.0
            headers = {}
            if self.knobs.send_retry_after and retry_after_header:
                headers["Retry-After"] = str(max(1, round(wait + 0.499)) if wait >= 1 else round(wait, 3))
            return JSONResponse(body_429, status_code=429, headers=headers)
        if fault == "timeout":
            await asyncio.sleep(self.knobs.hang_s)
            self.stats["5xx"] += 1
            return JSONResponse({"detail": "upstream timed out"}, status_code=504)
        if fault == "malformed":
            return Response('{"id": "trunc', status_code=200, media_type="application/json")
        self.stats["5xx"] += 1
        code = int(fault) if fault.isdigit() else 500
        return JSONResponse({"detail": "Internal server error"}, status_code=code)

    async def lose_answer(self) -> Response | None:
        """After a job was accepted: with `lost_answer_rate`, hang and answer 504, as if the answer got lost."""
        if not self.knobs.lost_answer_rate or self.rng.random() >= self.knobs.lost_answer_rate:
            return None
        await asyncio.sleep(self.knobs.hang_s)
        self.stats["5xx"] += 1
        return JSONResponse({"detail": "upstream timed out"}, status_code=504)

    def malformed_now(self) -> bool:
        return self.rng.random() < self.knobs.malformed_rate

    def output_bytes(self, data: bytes) -> bytes | int:
        """An output as served: the bytes, corrupted bytes, or a status code to answer with."""
        if self.knobs.output_faults:
            fault = self.knobs.output_faults.pop(0)
            if fault == "corrupt":
                return data[: len(data) // 3] + b"\x00garbage"
            return int(fault)
        if self.rng.random() < self.knobs.corrupt_rate:
            return data[: len(data) // 3] + b"\x00garbage"
        return data

    # ------------------------------------------------------------------ jobs and pixels

    async def new_job_async(self, params: dict[str, Any], *, source: bytes | None, request: GenerationRequest | None,
                            count: int, webhook: str | None = None) -> Job:
        """`new_job` with the pixels drawn on a worker thread: the fake keeps answering other requests
        meanwhile (drawn on its event loop, a burst of submits queues every answer behind the others'
        renders, and a client's timeout then cuts off answers of jobs the fake accepted)."""
        images = None
        if source is not None and request is not None and not self.filtered(request):
            images = await asyncio.to_thread(render, request, source, count, self.knobs.styled)
        return self.new_job(params, source=source, request=request, count=count, webhook=webhook, images=images)

    def filtered(self, request: GenerationRequest | None) -> bool:
        prompt = (request.prompt if request else "") or ""
        return bool(self.knobs.content_filter_word) and self.knobs.content_filter_word in prompt.lower()

    def new_job(self, params: dict[str, Any], *, source: bytes | None, request: GenerationRequest | None,
                count: int, webhook: str | None = None, job_id: str | None = None,
                images: list[bytes] | None = None) -> Job:
        now = time.monotonic()
        job = Job(id=job_id or uuid.uuid4().hex[:26], created=now, ready_at=now + self.knobs.latency_s,
                  params=params, webhook=webhook)
        job.extra["source_sha256"] = hashlib.sha256(source).hexdigest() if source is not None else None
        if self.filtered(request):
            job.error = "content_filtered"
        elif images is not None:
            job.images = images
        elif source is not None and request is not None:
            job.images = render(request, source, count, styled=self.knobs.styled)
        self.jobs[job.id] = job
        self.stats["accepted"] += 1
        return job

    def log(self, request: Request, **extra: Any) -> None:
        self.requests.append({"method": request.method, "path": request.url.path,
                              "headers": dict(request.headers), **extra})

    # ------------------------------------------------------------------ webhooks

    def deliver_later(self, job: Job, url: str, build: Callable[[Job, bool], tuple[dict[str, str], bytes]]) -> None:
        """Send the job's completion webhook as the `webhook` knob says. `build(job, forged)`
        returns the headers and raw body of one delivery."""
        mode = self.webhook_mode()

        async def run() -> None:
            await asyncio.sleep(max(0.0, job.ready_at - time.monotonic()))
            if mode == "lost":
                self.webhooks_sent.append({"job": job.id, "mode": mode, "status": None})
                return
            if mode == "late":
                await asyncio.sleep(self.knobs.webhook_late_s)
            headers, body = build(job, mode == "forged")
            times = 2 if mode == "duplicate" else 1
            for _ in range(times):
                status = await post(url, headers, body)
                self.webhooks_sent.append({"job": job.id, "mode": mode, "status": status, "headers": headers, "body": body})

        task = asyncio.get_running_loop().create_task(run())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def webhook_mode(self) -> str:
        """This job's delivery: one of the random modes by their rates, else the `webhook` knob."""
        k = self.knobs
        if not (k.webhook_lost_rate or k.webhook_duplicate_rate or k.webhook_forged_rate):
            return k.webhook  # no draw: seeded runs without these rates keep their sequence
        r = self.rng.random()
        for mode, rate in (("lost", k.webhook_lost_rate), ("duplicate", k.webhook_duplicate_rate), ("forged", k.webhook_forged_rate)):
            if r < rate:
                return mode
            r -= rate
        return k.webhook


async def post(url: str, headers: dict[str, str], body: bytes) -> int | None:
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
            resp = await client.post(url, content=body, headers={"content-type": "application/json", **headers})
            return resp.status_code
    except httpx.HTTPError:
        return None


def render(request: GenerationRequest, source: bytes, count: int, styled: bool = True) -> list[bytes]:
    img = Image.open(io.BytesIO(source))
    img.load()
    out = []
    for i in range(count):
        if styled:
            variant = render_variant(request, img, i, [])
        else:  # the source at the asked size, tinted by seed and index (distinct outputs, no styling work)
            w, h = request.width, request.height
            size = (w or (round(img.width * h / img.height) if h else img.width), h or (round(img.height * w / img.width) if w else img.height))
            tint = Image.new("RGB", size, tuple((((request.seed or 0) + i) * k) % 256 for k in (37, 91, 151)))
            variant = Image.blend(img.convert("RGB").resize(size, Image.Resampling.BILINEAR), tint, 0.15)
        buf = io.BytesIO()
        variant.save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def neutral_request(prompt: str, *, strength: float = 0.8, seed: int | None = None, negative: str = "",
                    guidance: float = 7.5, steps: int = 4, width: int = 0, height: int = 0) -> GenerationRequest:
    """A GenerationRequest for the renderer from whatever the wire carried (clamped to the contract)."""
    return GenerationRequest(
        source_image="fake://", prompt=prompt or "image", negative_prompt=negative or "",
        strength=min(1.0, max(0.01, float(strength))), seed=None if seed is None else int(seed) % 2**32,
        guidance_scale=min(15.0, max(0.1, float(guidance))), steps=min(50, max(1, int(steps))),
        width=width if 64 <= width <= 4096 else 0, height=height if 64 <= height <= 4096 else 0,
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def fetch_url(url: str) -> bytes:
    """Bytes behind an input URL (data: URI or an http URL on 127.0.0.1)."""
    if url.startswith("data:"):
        return base64.b64decode(url.partition(",")[2])
    if not url.startswith("http://127.0.0.1"):
        raise ValueError("fakes only fetch data: URIs and 127.0.0.1 URLs")
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        resp = await client.get(url)
        resp.raise_for_status()
        return resp.content


# --------------------------------------------------------------------------- running


class Served:
    """A uvicorn server on 127.0.0.1 in a thread; `.url`, `.stop()`; a context manager."""

    def __init__(self, app: Any, port: int | None = None, tls: tuple[str, str] | None = None):
        """`tls`: (certificate file, key file) to serve https."""
        import socket

        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=1, access_log=False,
                                ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name=f"fake-{port}")

    def start(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "Served":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(fake: FakeProvider) -> Served:
    served = Served(fake.app)
    fake.url = served.url
    return served


class WebhookSink:
    """A receiver that records every delivery (headers lower-cased, raw body)."""

    def __init__(self) -> None:
        from starlette.routing import Route

        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/hook/{name}", self._hook, methods=["POST"])])
        self.url = ""

    async def _hook(self, request: Request) -> Response:
        self.deliveries.append(({k.lower(): v for k, v in request.headers.items()}, await request.body()))
        return Response(status_code=200)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return list(self.deliveries)


Handler = Callable[[Request], Awaitable[Response]]


class StatusServer:
    """Answers every request, on any path and method, with one status code and its headers: the same
    answer for a provider, a refiner and a target, to compare what each block makes of it."""

    def __init__(self) -> None:
        from starlette.routing import Route

        self.status, self.headers = 200, {}
        self.requests: list[tuple[str, str]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._any, methods=["GET", "POST", "PUT", "DELETE"])])
        self.url = ""

    async def _any(self, request: Request) -> Response:
        self.requests.append((request.method, request.url.path))
        return JSONResponse({"detail": f"answered {self.status}"}, status_code=self.status, headers=self.headers)
