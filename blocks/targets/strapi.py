"""StrapiSite: publish to a Strapi v4 or v5 collection through its REST API, exactly once.

`POST /api/upload` puts the image into the media library (multipart `files`
plus a `fileInfo` JSON with name, alternative text and caption), then
`POST /api/<collection>` creates an entry whose media field holds the file's
numeric id (v5 as v4: media links use `id`, not `documentId`). The entry has a
text field holding the generation key, so a lookup with
`filters[<key_field>][$eq]=<key>` tells whether the publish is done; a file
whose name carries the key but no entry means a run died between upload and
entry, and only the entry is created. Auth is an API token (Settings → API
Tokens) sent as a Bearer token; it needs create/find on the collection and on
the upload plugin.

v4 wraps entry fields in `attributes` (`{data: {id, attributes: {...}}}`); v5
returns them flat with a `documentId`. Both shapes are read here.

A republished asset (a new recipe, new bytes: another key, the same source) replaces
its entry: the new file is uploaded, the asset's earlier entry (the ledger's receipt
names it) is re-pointed with `PUT /api/<collection>/<id>` (v4: the numeric id; v5: the
`documentId`; media still by numeric file id) carrying the new key and file in one
update, and the replaced upload is deleted with `DELETE /api/upload/files/<id>`. A
crash between upload and re-pointing leaves the keyed file: the rerun finds it by name
and re-points; a crash after re-pointing finds the entry by its new key and only
deletes the old file. The API token then also needs update on the collection and
destroy on the upload plugin.

`withdraw` takes a published entry down when its source is unpublished or deleted:
`DELETE /api/<collection>/<id>` (v4: the numeric id; v5: the `documentId`), or, to
unpublish, v4's `PUT /api/<collection>/<id>` with `{"data": {"publishedAt": null}}`.
Strapi 5's REST API has no way to unpublish (only its Document Service has), so on
v5 a withdrawal deletes the entry. An entry already gone (404) is not an error.
The API token then also needs update and delete on the collection.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from brandforge.blocks.targets.base import PublishTarget, keyed_filename
from brandforge.blocks.http import async_client, publish_error, publish_transport_error
from brandforge.models import PublishError, PublishItem, PublishReceipt


def strapi_file_name(item: PublishItem) -> str:
    """The media library name of an item's file: it carries the key so a half-done publish is found."""
    return keyed_filename(item, 16)


class StrapiSite(PublishTarget):
    """A Strapi (v4 or v5) collection type with a media field, as a publish target."""

    _block_type_name = "Brandforge Strapi Site"
    _block_type_slug = "brandforge-strapi-site"
    _description = "Publishes to a Strapi v4/v5 collection over REST (API token), exactly once per generation key."

    target_name: ClassVar[str] = "strapi"

    url: str = Field(description="Strapi address, e.g. https://cms.example.com (without /api).")
    api_token: SecretStr = Field(description="API token with create/find on the collection and the upload plugin.")
    version: Literal["v4", "v5"] = Field("v5", description="Strapi major version: v4 nests fields in attributes, v5 does not.")
    collection: str = Field("articles", description="Plural API id of the collection type, e.g. articles or products.")
    media_field: str = Field("cover", description="Single-media field of the collection that receives the image.")
    title_field: str | None = Field("title", description="Text field that receives the title; null to leave it out.")
    key_field: str = Field("generation_key", description="Text field (unique recommended) that holds brandforge's generation key.")
    extra_fields: dict[str, Any] = Field(default_factory=dict, description="Fixed values added to every entry.")
    timeout_seconds: float = Field(30.0, gt=0, description="Per-request timeout.")

    def destination(self) -> str:
        return f"{self.url.rstrip('/')}/api/{self.collection}"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/]+", v or ""):
            raise ValueError(f"url must be Strapi's http:// or https:// address (got {v!r})")
        return v.rstrip("/").removesuffix("/api")

    @field_validator("collection", "media_field", "key_field")
    @classmethod
    def _ident(cls, v: str, info: Any) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", v or ""):
            raise ValueError(f"{info.field_name} must be a Strapi API id (letters, digits, - and _; got {v!r})")
        return v

    # ------------------------------------------------------------------ HTTP plumbing

    def _client(self) -> httpx.AsyncClient:
        return async_client(
            self.timeout_seconds, base_url=self.url,
            headers={"Authorization": f"Bearer {self.api_token.get_secret_value()}", "User-Agent": "brandforge"},
        )

    async def _call(self, client: httpx.AsyncClient, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise publish_transport_error("Strapi", what, self.url, exc, self.timeout_seconds) from exc
        if response.status_code >= 400:
            hint = None
            if response.status_code == 404 and path.startswith(f"/api/{self.collection}"):
                hint = f"collection {self.collection!r} has no REST route; use the plural API id of a collection type"
            elif response.status_code == 400 and self.key_field in response.text:
                hint = f"the collection needs a text field named {self.key_field!r} (key_field)"
            raise publish_error("Strapi", what, response, hint=hint)
        try:
            return response.json()
        except ValueError as exc:
            raise PublishError(f"Strapi at {self.url} did not answer {what} with JSON", status_code=response.status_code) from exc

    def _fields(self, entry: dict[str, Any]) -> dict[str, Any]:
        if self.version == "v4":
            return {"id": entry.get("id"), **(entry.get("attributes") or {})}
        return entry

    def _media(self, value: Any) -> dict[str, Any] | None:
        """A populated single-media field, in either version's shape."""
        if self.version == "v4" and isinstance(value, dict) and "data" in value:
            value = value["data"]
            if isinstance(value, dict):
                value = {"id": value.get("id"), **(value.get("attributes") or {})}
        return value if isinstance(value, dict) else None

    def _absolute(self, url: str | None) -> str | None:
        # The local upload provider answers with paths (/uploads/x.jpg); S3 providers with URLs.
        if url and url.startswith("/"):
            return f"{self.url}{url}"
        return url

    def _receipt(self, entry: dict[str, Any], media: dict[str, Any] | None, *, already_existed: bool, media_reused: bool = False) -> PublishReceipt:
        fields = self._fields(entry)
        doc = fields.get("documentId") or fields.get("id")
        media_url = self._absolute((media or {}).get("url"))
        return PublishReceipt(
            target=self.target_name,
            url=media_url or f"{self.url}/api/{self.collection}/{doc}",
            already_existed=already_existed,
            remote_ids={
                "site": self.url, "version": self.version, "collection": self.collection, "entry_id": fields.get("id"),
                "document_id": fields.get("documentId"), "entry_url": f"{self.url}/api/{self.collection}/{doc}",
                "file_id": (media or {}).get("id"), "media_url": media_url, "media_reused": media_reused,
            },
        )

    # ------------------------------------------------------------------ lookups

    async def _find_entry(self, client: httpx.AsyncClient, key: str) -> dict[str, Any] | None:
        params = {f"filters[{self.key_field}][$eq]": key, "populate": self.media_field, "pagination[pageSize]": 5}
        body = await self._call(client, "GET", f"/api/{self.collection}", f"the {self.collection} lookup", params=params)
        entries = body.get("data") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise PublishError(f"Strapi answered the {self.collection} lookup without a data list; is version {self.version!r} right?")
        matching = [e for e in entries if self._fields(e).get(self.key_field) == key]
        if entries and not matching:
            # The filter was ignored (unknown field): trusting the answer could publish twice.
            raise PublishError(f"Strapi ignored the filter on {self.key_field!r}; the collection needs that text field (key_field)")
        return min(matching, key=lambda e: e.get("id") or 0) if matching else None

    async def _find_file(self, client: httpx.AsyncClient, name: str) -> dict[str, Any] | None:
        files = await self._call(client, "GET", "/api/upload/files", "the media lookup", params={"filters[name][$eq]": name})
        if not isinstance(files, list):
            raise PublishError("Strapi answered the media lookup without a list of files")
        matching = [f for f in files if f.get("name") == name]
        return min(matching, key=lambda f: f.get("id") or 0) if matching else None

    async def find_existing(self, item: PublishItem) -> PublishReceipt | None:
        async with self._client() as client:
            entry = await self._find_entry(client, item.publish_key)
        if entry is None:
            return None
        return self._receipt(entry, self._media(self._fields(entry).get(self.media_field)), already_existed=True)

    # ------------------------------------------------------------------ publish

    async def publish(self, item: PublishItem, replaces: dict | None = None) -> PublishReceipt:
        async with self._client() as client:
            entry = await self._find_entry(client, item.publish_key)
            if entry is not None:
                media = self._media(self._fields(entry).get(self.media_field))
                if replaces and self._ref(self._fields(entry)) == self._ref(replaces, receipt=True):
                    # A run died after re-pointing the entry, before removing the old file.
                    await self._drop_replaced_file(client, replaces, (media or {}).get("id"))
                return self._receipt(entry, media, already_existed=True)
            name = strapi_file_name(item)
            media = await self._find_file(client, name)
            reused = media is not None
            if media is None:
                media = await self._upload(client, item, name)
            replaced = await self._repoint(client, item, media, replaces) if replaces else None
            if replaced is not None:
                dropped = await self._drop_replaced_file(client, replaces, media["id"])  # type: ignore[arg-type]
                receipt = self._receipt(replaced, media, already_existed=False, media_reused=reused)
                receipt.remote_ids["replaced_file_id"] = dropped
                return receipt
            data = {**self.extra_fields, self.key_field: item.publish_key, self.media_field: media["id"]}
            if self.title_field:
                data[self.title_field] = item.title or Path(item.name).stem
            try:
                body = await self._call(client, "POST", f"/api/{self.collection}", f"creating the {self.collection} entry", json={"data": data})
            except PublishError as exc:
                # With key_field marked unique (recommended), a concurrent publish that won the
                # race makes ours a 400: its entry is the one to report.
                winner = await self._find_entry(client, item.publish_key) if exc.status_code == 400 else None
                if winner is None:
                    raise
                return self._receipt(winner, self._media(self._fields(winner).get(self.media_field)), already_existed=True)
            return self._receipt(body["data"], media, already_existed=False, media_reused=reused)

    # ------------------------------------------------------------------ replace

    def _ref(self, ids: dict[str, Any], receipt: bool = False) -> str | None:
        """How the REST API names an entry: v4 its numeric id, v5 its documentId (from an entry or a receipt)."""
        ref = ids.get({"v4": ("id", "entry_id"), "v5": ("documentId", "document_id")}[self.version][receipt])
        return str(ref) if isinstance(ref, (int, str)) and re.fullmatch(r"[A-Za-z0-9_-]+", str(ref)) else None

    async def _repoint(self, client: httpx.AsyncClient, item: PublishItem, media: dict[str, Any],
                       replaces: dict) -> dict[str, Any] | None:
        """Point the asset's earlier entry at the new file and key, in one update (its title and other
        fields stay). None when there is no such entry (deleted by a person): a new one is created."""
        ref = self._ref(replaces, receipt=True)
        if ref is None or replaces.get("collection") != self.collection:
            return None
        data = {self.key_field: item.publish_key, self.media_field: media["id"]}
        try:
            body = await self._call(client, "PUT", f"/api/{self.collection}/{ref}",
                                    f"re-pointing {self.collection} entry {ref} at the new file", json={"data": data})
        except PublishError as exc:
            if exc.status_code == 404:
                return None
            raise
        return body["data"]

    async def _drop_replaced_file(self, client: httpx.AsyncClient, replaces: dict, keep_id: int | None) -> int | None:
        """Delete the replaced upload (`DELETE /api/upload/files/:id`), so the media library does not grow
        with every recipe change; never the new file. Returns the deleted id, if any (gone already: None)."""
        old_id = replaces.get("file_id")
        if not isinstance(old_id, int) or old_id == keep_id:
            return None
        try:
            await self._call(client, "DELETE", f"/api/upload/files/{old_id}", "deleting the replaced file")
        except PublishError as exc:
            if exc.status_code == 404:
                return None
            raise
        return old_id

    # ------------------------------------------------------------------ withdraw

    async def withdraw(self, remote_ids: dict, *, delete: bool) -> str:
        ref = remote_ids.get("document_id") if self.version == "v5" else remote_ids.get("entry_id")
        if not isinstance(ref, (int, str)) or not re.fullmatch(r"[A-Za-z0-9_-]+", str(ref)):
            raise PublishError(f"the receipt names no Strapi {self.version} entry to withdraw (remote ids: "
                               f"{sorted(remote_ids)})")
        path = f"/api/{self.collection}/{ref}"
        unpublish = not delete and self.version == "v4"
        what = f"{'unpublishing' if unpublish else 'deleting'} {self.collection} entry {ref}"
        async with self._client() as client:
            try:
                if unpublish:
                    response = await client.put(path, json={"data": {"publishedAt": None}})
                else:
                    response = await client.delete(path)
            except httpx.TransportError as exc:
                raise publish_transport_error("Strapi", what, self.url, exc, self.timeout_seconds) from exc
        if response.status_code == 404:
            return f"entry {ref} already gone"
        if response.status_code >= 400:
            raise publish_error("Strapi", what, response)
        if unpublish:
            return f"entry {ref} unpublished (draft)"
        return f"entry {ref} deleted" + ("" if delete else " (Strapi 5's REST API cannot unpublish)")

    async def _upload(self, client: httpx.AsyncClient, item: PublishItem, name: str) -> dict[str, Any]:
        try:
            data = Path(item.image_path).read_bytes()
        except OSError as exc:
            raise PublishError(f"cannot read the image to publish {item.image_path!r}: {exc}") from exc
        info = {"name": name, "alternativeText": item.alt_text[:500], "caption": f"brandforge {item.publish_key}"}
        files = await self._call(
            client, "POST", "/api/upload", "the media upload",
            files={"files": (name, data, item.content_type)}, data={"fileInfo": json.dumps(info)},
        )
        if not isinstance(files, list) or not files or "id" not in files[0]:
            raise PublishError("Strapi answered the upload without the uploaded file")
        return files[0]
