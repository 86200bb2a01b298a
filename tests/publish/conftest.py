"""Fixtures of the publish tests: a real WordPress (Debian's packages) for the session,
a fault-injecting HTTP proxy in front of it, a fake Strapi, and small images to publish.

The WordPress comes from `scripts/wordpress-up.sh` (the same script CI and people
use); it is stopped, with its MariaDB and PHP workers, when the session ends. The
tests skip with the script's message only when its Debian packages cannot be
installed on this machine.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from brandforge.models import PublishItem
from tests.conftest import free_port
from tests.fakes.base import Served

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "wordpress-up.sh"


@dataclass
class WordPressEnv:
    url: str
    user: str
    app_password: str
    viewer: str
    viewer_password: str
    seconds_to_start: float

    def site(self, **overrides: Any):
        from brandforge.blocks.targets.wordpress import WordPressSite

        values = {"url": self.url, "username": self.user, "application_password": self.app_password, "timeout_seconds": 20}
        return WordPressSite(**{**values, **overrides})

    def get(self, route: str, **params: Any) -> Any:
        """Read back through the REST API, as the admin (drafts and meta included)."""
        response = httpx.get(
            f"{self.url}/", params={"rest_route": route, **params}, auth=(self.user, self.app_password), timeout=20,
        )
        response.raise_for_status()
        return response.json()

    def count(self, rest_base: str, key: str) -> int:
        params = {"brandforge_generation_key": key, "context": "edit", "per_page": 100}
        if rest_base != "media":
            params["status"] = "any"
        return len(self.get(f"/wp/v2/{rest_base}", **params))


@pytest.fixture(scope="session")
def wordpress(tmp_path_factory) -> WordPressEnv:
    import time

    state = tmp_path_factory.mktemp("wordpress")
    env = {**os.environ, "BF_WP_DIR": str(state), "BF_WP_PORT": str(free_port())}
    started = time.monotonic()
    run = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    try:
        if run.returncode == 3:
            pytest.skip(f"WordPress tests skipped: {run.stderr.strip().splitlines()[-1]}")
        if run.returncode != 0:
            pytest.fail(f"scripts/wordpress-up.sh failed ({run.returncode}):\n{run.stderr[-3000:]}")
        values = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
        yield WordPressEnv(
            url=values["BF_WP_URL"], user=values["BF_WP_USER"], app_password=values["BF_WP_APP_PASSWORD"],
            viewer=values["BF_WP_VIEWER_USER"], viewer_password=values["BF_WP_VIEWER_APP_PASSWORD"],
            seconds_to_start=seconds,
        )
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)


@dataclass
class Fault:
    """Answer `status` to the next `times` requests matching method and route; `forward` first if asked."""

    method: str
    route: str
    status: int
    times: int = 1
    forward: bool = False


@dataclass
class FaultProxy:
    """An HTTP proxy in front of a real server that fails chosen requests on the wire."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str, int]] = field(default_factory=list)
    url: str = ""

    def _route(self, request: Request) -> str:
        return request.query_params.get("rest_route") or request.url.path

    async def handle(self, request: Request) -> Response:
        route, body = self._route(request), await request.body()
        fault = next((f for f in self.faults if f.times > 0 and f.method == request.method and f.route == route), None)
        if fault and not fault.forward:
            fault.times -= 1
            self.seen.append((request.method, route, fault.status))
            return JSONResponse({"code": "injected_fault", "message": f"status {fault.status} from the test proxy", "data": {"status": fault.status}}, fault.status)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with httpx.AsyncClient(timeout=30) as client:
            upstream = await client.request(
                request.method, f"{self.upstream}{request.url.path}", params=list(request.query_params.multi_items()),
                headers=headers, content=body,
            )
        if fault:  # the server did the work; the client never learns it (a crash after the request)
            fault.times -= 1
            self.seen.append((request.method, route, fault.status))
            return JSONResponse({"code": "injected", "message": "lost answer"}, fault.status)
        self.seen.append((request.method, route, upstream.status_code))
        drop = {"content-encoding", "transfer-encoding", "content-length", "connection"}
        return Response(upstream.content, upstream.status_code, {k: v for k, v in upstream.headers.items() if k.lower() not in drop})


@pytest.fixture
def wp_proxy(wordpress):
    proxy = FaultProxy(upstream=wordpress.url)
    app = Starlette(routes=[Route("/{path:path}", proxy.handle, methods=["GET", "POST", "PUT", "DELETE"])])
    with Served(app) as served:
        proxy.url = served.url
        yield proxy


@pytest.fixture
def strapi_fake(request):
    from tests.fakes.strapi import FakeStrapi, serve_strapi

    fake = FakeStrapi(version=getattr(request, "param", "v5"))
    with serve_strapi(fake):
        yield fake


def make_image(path: Path, colour: str = "red", size: tuple[int, int] = (96, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=90)
    return path


@pytest.fixture
def publish_item(tmp_path) -> PublishItem:
    """A fresh item (its own generation key) with a real JPEG and a source file beside it."""
    key = uuid.uuid4().hex + uuid.uuid4().hex
    image = make_image(tmp_path / "out" / "final-0.jpg")
    source = make_image(tmp_path / "catalog" / "red mug.jpg", "blue")
    return PublishItem(
        client="demo", name="red mug.jpg", generation_key=key, image_path=str(image), source_uri=source.as_uri(),
        source_key=uuid.uuid4().hex * 2, source_path=str(source), title="Red mug", alt_text="a red mug, watercolour",
        content_type="image/jpeg", scores={"sharpness": 120.0}, params={"recipe": "watercolour", "seed": 7},
    )
