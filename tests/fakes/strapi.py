"""A fake Strapi (v4 or v5) that follows Strapi's documented REST shapes, over HTTP on 127.0.0.1.

Strapi itself needs a Node toolchain and a build; this fake speaks its wire
format instead, as documented at docs.strapi.io (REST API, Upload, filters):

- `POST /api/upload`: multipart `files` + `fileInfo` JSON → a JSON list of file
  objects (`id`, `name`, `alternativeText`, `caption`, `mime`, `size`, `url`, …;
  v5 adds `documentId`);
- `GET /api/upload/files?filters[name][$eq]=…` → a plain JSON list of files;
  `GET` / `DELETE /api/upload/files/<id>` → the file (deleted: the file it was; 404 when none);
- `GET /api/<collection>?filters[<field>][$eq]=…&populate=<media>` and
  `POST /api/<collection>` with `{"data": {...}}` → v4 `{data: {id, attributes}}`,
  v5 `{data: {id, documentId, ...fields}}`, with `meta.pagination` on lists;
- `PUT /api/<collection>/<id>` (v4: numeric id; v5: documentId) with `{"data": {...}}`, where v4
  takes `publishedAt: null` to unpublish; `DELETE /api/<collection>/<id>` (v4: the deleted
  entry; v5: 204 No Content); lists return published entries only unless v4's
  `publicationState=preview` / v5's `status=draft` asks for drafts;
- errors as `{"data": null, "error": {"status", "name", "message", "details"}}`;
- Bearer API token auth (401 without or with a wrong token, 403 for a
  read-only token writing).

Knobs: `faults`, per route ("upload", "files", "find", "create", "update", "delete-file"), a queue of
HTTP statuses for the next requests there, or "store-then-500" (keep the upload
or entry, then answer 500: the client never learns it); `error_rate_5xx`: the same
faults at random (seeded by `seed`: 500, 503, or on writes store-then-500), `max_upload_bytes`
(413 above it), `allowed_mimes` (400 for other files). `files` and `entries`
are inspectable by tests.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import Served


def _error(status: int, name: str, message: str) -> JSONResponse:
    return JSONResponse({"data": None, "error": {"status": status, "name": name, "message": message, "details": {}}}, status)


class FakeStrapi:
    def __init__(
        self, *, version: str = "v5", token: str = "strapi-token", read_only_token: str = "read-only-token",
        collection: str = "articles", fields: tuple[str, ...] = ("title", "generation_key", "cover"),
        media_fields: tuple[str, ...] = ("cover",), unique_fields: tuple[str, ...] = ("generation_key",),
        error_rate_5xx: float = 0.0, seed: int = 0,
    ):
        self.version = version
        self.token, self.read_only_token = token, read_only_token
        self.collection = collection
        self.fields, self.media_fields, self.unique_fields = set(fields), set(media_fields), set(unique_fields)
        self.files: list[dict[str, Any]] = []
        self.entries: list[dict[str, Any]] = []
        self.faults: dict[str, list[Any]] = {"upload": [], "files": [], "find": [], "create": [], "update": [],
                                             "delete-file": []}
        self.error_rate_5xx = error_rate_5xx
        self.rng = random.Random(seed)
        self.injected: dict[str, int] = {}  # random faults played, by fault
        self.max_upload_bytes = 10 * 1024 * 1024
        self.allowed_mimes = {"image/jpeg", "image/png", "image/webp"}
        self.requests: list[tuple[str, str]] = []
        self._file_ids, self._entry_ids = itertools.count(1), itertools.count(1)
        self.url = ""
        self.app = Starlette(routes=[
            Route("/api/upload", self._upload, methods=["POST"]),
            Route("/api/upload/files", self._list_files, methods=["GET"]),
            Route("/api/upload/files/{fid:int}", self._one_file, methods=["GET", "DELETE"]),
            Route("/api/{collection}", self._collection, methods=["GET", "POST"]),
            Route("/api/{collection}/{ref}", self._one, methods=["PUT", "DELETE"]),
        ])

    # ------------------------------------------------------------------ plumbing

    def _auth(self, request: Request, write: bool) -> Response | None:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
        if token not in (self.token, self.read_only_token):
            return _error(401, "UnauthorizedError", "Missing or invalid credentials")
        if write and token == self.read_only_token:
            return _error(403, "ForbiddenError", "Forbidden")
        return None

    def _fault(self, route: str) -> Any:
        queue = self.faults.setdefault(route, [])
        if queue:
            return queue.pop(0)
        if self.error_rate_5xx and self.rng.random() < self.error_rate_5xx:
            fault = self.rng.choice([500, 503, "store-then-500"] if route in ("upload", "create") else [500, 503])
            self.injected[str(fault)] = self.injected.get(str(fault), 0) + 1
            return fault
        return None

    def _file_shape(self, f: dict[str, Any]) -> dict[str, Any]:
        return dict(f) if self.version == "v5" else {k: v for k, v in f.items() if k != "documentId"}

    def _entry_shape(self, e: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in e.items() if k not in ("id", "documentId")}
        fields.setdefault("publishedAt", None)
        for media in self.media_fields & fields.keys():
            file = next((f for f in self.files if f["id"] == fields[media]), None)
            if self.version == "v4":
                fields[media] = {"data": {"id": file["id"], "attributes": {k: v for k, v in file.items() if k not in ("id", "documentId")}} if file else None}
            else:
                fields[media] = self._file_shape(file) if file else None
        if self.version == "v4":
            return {"id": e["id"], "attributes": fields}
        return {"id": e["id"], "documentId": e["documentId"], **fields}

    # ------------------------------------------------------------------ routes

    async def _upload(self, request: Request) -> Response:
        self.requests.append(("POST", "/api/upload"))
        if denied := self._auth(request, write=True):
            return denied
        fault = self._fault("upload")
        if isinstance(fault, int):
            return _error(fault, "InternalServerError" if fault >= 500 else "ApplicationError", f"injected {fault}")
        body = await request.body()
        if len(body) > self.max_upload_bytes:
            return Response("Payload Too Large", status_code=413)
        form = await request.form()
        upload = form.get("files")
        if upload is None or isinstance(upload, str):
            return _error(400, "ValidationError", "Files are empty")
        info = json.loads(form.get("fileInfo") or "{}")
        if upload.content_type not in self.allowed_mimes:
            return _error(400, "ValidationError", f"File type {upload.content_type} is not allowed")
        data = await upload.read()
        fid = next(self._file_ids)  # never reused, as a database's autoincrement
        name = info.get("name") or upload.filename
        file = {
            "id": fid, "documentId": uuid.uuid4().hex[:24], "name": name,
            "alternativeText": info.get("alternativeText"), "caption": info.get("caption"),
            "hash": uuid.uuid4().hex[:10], "ext": "." + name.rsplit(".", 1)[-1], "mime": upload.content_type,
            "size": round(len(data) / 1000, 2), "url": f"/uploads/{fid}-{name}", "provider": "local",
        }
        self.files.append(file)
        if fault == "store-then-500":  # stored, but the client never learns it
            return _error(500, "InternalServerError", "Internal Server Error")
        return JSONResponse([self._file_shape(file)])

    async def _list_files(self, request: Request) -> Response:
        self.requests.append(("GET", "/api/upload/files"))
        if denied := self._auth(request, write=False):
            return denied
        fault = self._fault("files")
        if isinstance(fault, int):
            return _error(fault, "InternalServerError" if fault >= 500 else "ApplicationError", f"injected {fault}")
        name = request.query_params.get("filters[name][$eq]")
        files = [f for f in self.files if name is None or f["name"] == name]
        return JSONResponse([self._file_shape(f) for f in files])

    async def _one_file(self, request: Request) -> Response:
        fid = request.path_params["fid"]
        self.requests.append((request.method, f"/api/upload/files/{fid}"))
        if denied := self._auth(request, write=request.method == "DELETE"):
            return denied
        if request.method == "DELETE" and isinstance(fault := self._fault("delete-file"), int):
            return _error(fault, "InternalServerError" if fault >= 500 else "ApplicationError", f"injected {fault}")
        file = next((f for f in self.files if f["id"] == fid), None)
        if file is None:
            return _error(404, "NotFoundError", "file not found")
        if request.method == "DELETE":
            self.files.remove(file)
        return JSONResponse(self._file_shape(file))

    async def _collection(self, request: Request) -> Response:
        collection = request.path_params["collection"]
        self.requests.append((request.method, f"/api/{collection}"))
        if collection != self.collection:
            return _error(404, "NotFoundError", "Not Found")
        if denied := self._auth(request, write=request.method == "POST"):
            return denied
        fault = self._fault("find" if request.method == "GET" else "create")
        if isinstance(fault, int):
            return _error(fault, "InternalServerError" if fault >= 500 else "ApplicationError", f"injected {fault}")
        if request.method == "GET":
            drafts = request.query_params.get("publicationState") == "preview" or request.query_params.get("status") == "draft"
            found = [e for e in self.entries if drafts or e.get("publishedAt")]
            for param, value in request.query_params.items():
                if param.startswith("filters[") and param.endswith("][$eq]"):
                    field = param[len("filters["):-len("][$eq]")]
                    if field not in self.fields:
                        return _error(400, "ValidationError", f"Invalid key {field}")
                    found = [e for e in found if str(e.get(field)) == value]
            data = [self._entry_shape(e) for e in found]
            return JSONResponse({"data": data, "meta": {"pagination": {"page": 1, "pageSize": 25, "pageCount": 1, "total": len(data)}}})
        body = await request.json()
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return _error(400, "ValidationError", "Missing \"data\" payload in the request body")
        unknown = set(data) - self.fields
        if unknown:
            return _error(400, "ValidationError", f"Invalid key {sorted(unknown)[0]}")
        for media in self.media_fields & data.keys():
            if not any(f["id"] == data[media] for f in self.files):
                return _error(400, "ValidationError", f"Invalid relations: file {data[media]} not found")
        for field in self.unique_fields & data.keys():
            if any(e.get(field) == data[field] for e in self.entries):
                return _error(400, "ValidationError", "This attribute must be unique")
        entry = {"id": next(self._entry_ids), "documentId": uuid.uuid4().hex[:24], "publishedAt": "2026-12-04T17:00:00.000Z", **data}
        self.entries.append(entry)
        if fault == "store-then-500":
            return _error(500, "InternalServerError", "Internal Server Error")
        return JSONResponse({"data": self._entry_shape(entry), "meta": {}})


    async def _one(self, request: Request) -> Response:
        collection, ref = request.path_params["collection"], request.path_params["ref"]
        self.requests.append((request.method, f"/api/{collection}/{ref}"))
        if collection != self.collection:
            return _error(404, "NotFoundError", "Not Found")
        if denied := self._auth(request, write=True):
            return denied
        key = "documentId" if self.version == "v5" else "id"
        entry = next((e for e in self.entries if str(e[key]) == ref), None)
        if entry is None:
            return _error(404, "NotFoundError", "Not Found")
        if request.method == "DELETE":
            self.entries.remove(entry)
            return Response(status_code=204) if self.version == "v5" else JSONResponse({"data": self._entry_shape(entry), "meta": {}})
        if isinstance(fault := self._fault("update"), int):
            return _error(fault, "InternalServerError" if fault >= 500 else "ApplicationError", f"injected {fault}")
        data = (await request.json()).get("data")
        if not isinstance(data, dict) or set(data) - self.fields - {"publishedAt"}:
            return _error(400, "ValidationError", "Invalid data")
        for media in self.media_fields & data.keys():
            if not any(f["id"] == data[media] for f in self.files):
                return _error(400, "ValidationError", f"Invalid relations: file {data[media]} not found")
        for field in self.unique_fields & data.keys():
            if any(e is not entry and e.get(field) == data[field] for e in self.entries):
                return _error(400, "ValidationError", "This attribute must be unique")
        if "publishedAt" in data and self.version == "v5":
            data.pop("publishedAt")  # v5 ignores it (its REST API cannot unpublish)
        entry.update(data)
        return JSONResponse({"data": self._entry_shape(entry), "meta": {}})


def serve_strapi(fake: FakeStrapi) -> Served:
    served = Served(fake.app)
    fake.url = served.url
    return served
