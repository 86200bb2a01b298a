"""An "internal" HTTP server on 127.0.0.1 for the URL-guard tests: it counts every request it gets,
so a test can prove a refused URL was refused before any connection.

Routes: `/image.png` (a small PNG), `/big` (declares a large Content-Length), `/stream-big`
(streams without a length), `/redirect?to=<url>` (302), `/forbidden` (403 with a long HTML page),
anything else echoes what arrived (host header, authorization) as JSON.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

SECRET_PAGE = "<html><head><title>Forbidden</title></head><body>" + "internal-secret-token " * 400 + "</body></html>"


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class InternalServer:
    hits: list[dict] = field(default_factory=list)
    big_bytes: int = 4_000_000

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])

    async def handle(self, request: Request) -> Response:
        self.hits.append({"path": request.url.path, "host": request.headers.get("host"),
                          "authorization": request.headers.get("authorization")})
        path = request.url.path
        if path == "/image.png":
            return Response(png_bytes(), media_type="image/png")
        if path == "/big":
            return Response(b"x" * self.big_bytes, media_type="application/octet-stream")
        if path == "/stream-big":
            async def chunks():
                for _ in range(self.big_bytes // 65536 + 1):
                    yield b"x" * 65536
            return StreamingResponse(chunks(), media_type="application/octet-stream")
        if path == "/redirect":
            return RedirectResponse(request.query_params["to"], status_code=302)
        if path == "/forbidden":
            return Response(SECRET_PAGE, status_code=403, media_type="text/html")
        return JSONResponse(self.hits[-1])
