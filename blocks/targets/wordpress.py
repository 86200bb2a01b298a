"""WordPressSite: publish to a WordPress site through its REST API, exactly once.

The image goes into the media library, then an entry of the configured type
(posts, pages, a shop's products …) is created with it as the featured image.
Both carry the generation key in the post meta `_brandforge_generation_key`,
which the must-use plugin `scripts/wordpress/brandforge-meta.php` registers and
makes queryable. So before creating anything the block asks the site itself:
an entry with the key means the publish is done (a retry, a rerun, a duplicated
webhook); a media item with the key but no entry means a run died between
upload and post, and only the entry is created.

A republished asset (a new recipe, new bytes: another key, the same source) replaces
its entry: the new image is uploaded, the asset's earlier entry (the ledger's
receipt names it) is re-pointed at it in one update — featured image, the image in
its content, the key — and the replaced image is deleted from the media library, so
it does not grow with every recipe change (an image a person uploaded is never
deleted). A crash between upload and re-pointing leaves the new image keyed: the
rerun finds it and re-points; a crash after re-pointing finds the entry by its new
key and only removes the old image. The entry's title, status and a person's edits stay.

Authentication is a WordPress application password (Users → Profile →
Application Passwords) sent as HTTP Basic auth; over plain HTTP WordPress only
accepts it when `WP_ENVIRONMENT_TYPE` is `local`.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from brandforge.blocks.targets.base import PublishTarget, keyed_filename
from brandforge.blocks.http import async_client, publish_error, publish_transport_error
from brandforge.models import PublishError, PublishItem, PublishReceipt

KEY_META = "_brandforge_generation_key"
SOURCE_META = "_source_image"  # the source a published image came from (URI)
PLUGIN_HINT = "copy scripts/wordpress/brandforge-meta.php into the site's wp-content/mu-plugins/"


def _safe_filename(item: PublishItem) -> str:
    return keyed_filename(item, 12)


class WordPressSite(PublishTarget):
    """A WordPress site: media library upload + an entry with it as the featured image."""

    _block_type_name = "Brandforge WordPress Site"
    _block_type_slug = "brandforge-wordpress-site"
    _description = "Publishes to WordPress over the REST API (application password), exactly once per generation key."

    target_name: ClassVar[str] = "wordpress"

    url: str = Field(description="Site address, e.g. https://shop.example.com (no trailing /wp-json).")
    username: str = Field(description="WordPress user that owns the application password.")
    application_password: SecretStr = Field(description="Application password (Users → Profile → Application Passwords).")
    post_type: str = Field("posts", description="REST base of the entry type: posts, pages, or a custom type's (e.g. product).")
    status: Literal["publish", "draft", "pending", "private"] = Field(
        "draft", description="Status of the created entry: draft by default, so a person publishes it in WordPress."
    )
    rest_style: Literal["query", "pretty"] = Field(
        "query",
        description="query: /?rest_route=/wp/v2/… (works on every site); pretty: /wp-json/wp/v2/… (needs permalinks).",
    )
    timeout_seconds: float = Field(30.0, gt=0, description="Per-request timeout.")

    def destination(self) -> str:
        return f"{self.url.rstrip('/')}/{self.post_type}"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/]+", v or ""):
            raise ValueError(f"url must be the site's http:// or https:// address (got {v!r})")
        return v.rstrip("/")

    @field_validator("post_type")
    @classmethod
    def _post_type(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9_-]+", v or ""):
            raise ValueError(f"post_type must be a REST base such as posts, pages or product (got {v!r})")
        return v

    # ------------------------------------------------------------------ HTTP plumbing

    def _client(self) -> httpx.AsyncClient:
        # Redirects are not followed: a redirected REST call would lose its method and body.
        return async_client(
            self.timeout_seconds, follow_redirects=False,
            auth=(self.username, self.application_password.get_secret_value()),
            headers={"User-Agent": "brandforge", "Accept": "application/json"},
        )

    def _route(self, route: str, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        params = dict(params or {})
        if self.rest_style == "pretty":
            return f"{self.url}/wp-json{route}", params
        return f"{self.url}/", {"rest_route": route, **params}

    async def _call(
        self, client: httpx.AsyncClient, method: str, route: str, what: str, *, params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        url, query = self._route(route, params)
        try:
            response = await client.request(method, url, params=query, **kwargs)
        except httpx.TransportError as exc:
            raise publish_transport_error("WordPress", what, self.url, exc, self.timeout_seconds) from exc
        if response.status_code >= 400:
            raise self._refusal(what, response)
        if 300 <= response.status_code < 400:
            raise PublishError(
                f"WordPress at {self.url} redirected {what} to {response.headers.get('location')!r}; "
                "set url to the site's canonical address",
                status_code=response.status_code,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise PublishError(
                f"WordPress at {self.url} did not answer {what} with JSON (is the REST API reachable? "
                f"rest_style={self.rest_style!r}; 'query' works without permalinks)",
                status_code=response.status_code,
            ) from exc

    def _refusal(self, what: str, response: httpx.Response) -> PublishError:
        code = ""
        try:
            code = str(response.json().get("code") or "")
        except (ValueError, AttributeError):
            pass
        if code.startswith("rest_upload_"):
            # WordPress answers 500 when it refuses a file (type not allowed, bytes not
            # matching the extension): no retry can change that.
            return publish_error("WordPress", what, response, retryable=False, hint="the site refuses this file")
        if response.status_code == 404 and code == "rest_no_route":
            return publish_error(
                "WordPress", what, response,
                hint=f"post_type {self.post_type!r} has no REST route on this site; use the rest_base of a type "
                "with show_in_rest (see /wp/v2/types)",
            )
        return publish_error("WordPress", what, response)

    # ------------------------------------------------------------------ lookups

    async def _preflight(self, client: httpx.AsyncClient) -> None:
        """The plugin must be installed and the credentials accepted, or a lookup could miss."""
        try:
            status = await self._call(client, "GET", "/brandforge/v1/status", "the plugin check")
        except PublishError as exc:
            if exc.status_code == 404:
                raise PublishError(
                    f"WordPress at {self.url} lacks brandforge's meta plugin, so it cannot be asked whether an image "
                    f"was already published: {PLUGIN_HINT}",
                    status_code=404,
                ) from exc
            raise
        if not status.get("user_id"):
            raise PublishError(
                f"WordPress at {self.url} did not accept the application password of user {self.username!r} "
                "(401: it treats the request as anonymous); check username and application_password "
                "(over plain HTTP the site needs WP_ENVIRONMENT_TYPE 'local')",
                status_code=401,
            )
        missing = [cap for cap in ("can_upload_files", "can_edit_posts") if not status.get(cap)]
        if missing:
            raise PublishError(
                f"WordPress user {self.username!r} may not {' and '.join(c.removeprefix('can_').replace('_', ' ') for c in missing)} "
                "(403); give it the author, editor or administrator role",
                status_code=403,
            )

    async def _find(self, client: httpx.AsyncClient, rest_base: str, key: str, what: str) -> dict[str, Any] | None:
        params: dict[str, Any] = {"brandforge_generation_key": key, "context": "edit", "per_page": 10}
        if rest_base != "media":
            params["status"] = "any"
        found = await self._call(client, "GET", f"/wp/v2/{rest_base}", what, params=params)
        if not isinstance(found, list):
            raise PublishError(f"WordPress answered {what} with {type(found).__name__}, not a list")
        matching = [p for p in found if isinstance(p.get("meta"), dict) and p["meta"].get(KEY_META) == key]
        if found and not matching:
            # The filter was ignored: trusting this answer could publish twice.
            raise PublishError(f"WordPress at {self.url} ignored the generation-key filter for {rest_base}; {PLUGIN_HINT}")
        return min(matching, key=lambda p: p["id"]) if matching else None

    async def _media_url(self, client: httpx.AsyncClient, media_id: int) -> str | None:
        if not media_id:
            return None
        try:
            media = await self._call(client, "GET", f"/wp/v2/media/{media_id}", "the media lookup", params={"context": "edit"})
        except PublishError as exc:
            if exc.status_code == 404:  # someone deleted the image; the entry still stands
                return None
            raise
        return media.get("source_url")

    def _receipt(
        self, post: dict[str, Any], media_id: int | None, media_url: str | None, *, already_existed: bool = False,
        media_reused: bool = False,
    ) -> PublishReceipt:
        return PublishReceipt(
            target=self.target_name,
            url=post.get("link") or f"{self.url}/?p={post['id']}",
            remote_ids={
                "site": self.url, "post_type": self.post_type, "post_id": post["id"], "status": post.get("status"),
                "media_id": media_id, "media_url": media_url, "media_reused": media_reused,
            },
            already_existed=already_existed,
        )

    async def find_existing(self, item: PublishItem) -> PublishReceipt | None:
        async with self._client() as client:
            await self._preflight(client)
            return await self._existing(client, item)

    async def _existing(self, client: httpx.AsyncClient, item: PublishItem) -> PublishReceipt | None:
        post = await self._find(client, self.post_type, item.publish_key, f"the {self.post_type} lookup")
        if post is None:
            return None
        media_id = post.get("featured_media") or None
        return self._receipt(post, media_id, await self._media_url(client, media_id), already_existed=True)

    # ------------------------------------------------------------------ publish

    async def publish(self, item: PublishItem, replaces: dict | None = None) -> PublishReceipt:
        async with self._client() as client:
            await self._preflight(client)
            existing = await self._existing(client, item)
            if existing:
                if replaces and existing.remote_ids["post_id"] == replaces.get("post_id"):
                    # A run died after re-pointing the entry, before removing the old image.
                    await self._drop_replaced_media(client, replaces, existing.remote_ids["media_id"])
                return existing
            media = await self._find(client, "media", item.publish_key, "the media lookup")
            resumed = media is not None
            if media is None:
                media = await self._settle(client, "media", item.publish_key, await self._upload(client, item))
            post = await self._repoint(client, item, media, replaces) if replaces else None
            if post is not None:
                dropped = await self._drop_replaced_media(client, replaces, media["id"])
                receipt = self._receipt(post, media["id"], media.get("source_url"), media_reused=resumed)
                receipt.remote_ids["replaced_media_id"] = dropped
                return receipt
            post = await self._create_entry(client, item, media)
            settled = await self._settle(client, self.post_type, item.publish_key, post)
            return self._receipt(
                settled, media["id"], media.get("source_url"), media_reused=resumed, already_existed=settled["id"] != post["id"],
            )

    # ------------------------------------------------------------------ replace

    async def _repoint(self, client: httpx.AsyncClient, item: PublishItem, media: dict[str, Any],
                       replaces: dict) -> dict[str, Any] | None:
        """Point the asset's earlier entry at the new image, in one update: featured image, the image in its
        content and its key together. Title, status and a person's edits stay. None when there is no such
        entry to replace (deleted or trashed by a person, or not this source's): a new one is created."""
        post_id = replaces.get("post_id")
        # The ledger hands over only receipts of this target instance (its site and post type); the source check
        # below keeps a hand-made `replaces` from re-pointing another asset's entry.
        if not isinstance(post_id, int) or replaces.get("post_type") != self.post_type:
            return None
        try:
            post = await self._call(client, "GET", f"/wp/v2/{self.post_type}/{post_id}", "the earlier entry's lookup",
                                    params={"context": "edit"})
        except PublishError as exc:
            if exc.status_code in (404, 410):
                return None
            raise
        meta = post.get("meta") if isinstance(post.get("meta"), dict) else {}
        if post.get("status") == "trash" or not meta.get(KEY_META) or meta.get(SOURCE_META) != item.source_uri:
            return None
        old_id, new_id = post.get("featured_media") or replaces.get("media_id"), int(media["id"])
        content = (post.get("content") or {}).get("raw") or ""
        old_url, new_url = replaces.get("media_url"), media.get("source_url") or ""
        if old_url:
            content = content.replace(html.escape(old_url, quote=True), html.escape(new_url, quote=True)).replace(old_url, new_url)
        if old_id:
            content = re.sub(rf'("id":|wp-image-){int(old_id)}(?!\d)', rf"\g<1>{new_id}", content)
        body = {"featured_media": new_id, "content": content,
                "meta": {KEY_META: item.publish_key, SOURCE_META: item.source_uri}}
        return await self._call(client, "POST", f"/wp/v2/{self.post_type}/{post_id}",
                                f"re-pointing {self.post_type} entry {post_id} at the new image",
                                params={"context": "edit"}, json=body)

    async def _drop_replaced_media(self, client: httpx.AsyncClient, replaces: dict, keep_id: int | None) -> int | None:
        """Delete the replaced image from the media library (so it does not grow with every recipe change);
        only an image brandforge uploaded, never the new one. Returns the deleted id, if any."""
        old_id = replaces.get("media_id")
        if not isinstance(old_id, int) or old_id == keep_id:
            return None
        try:
            old = await self._call(client, "GET", f"/wp/v2/media/{old_id}", "the replaced media lookup",
                                   params={"context": "edit"})
        except PublishError as exc:
            if exc.status_code in (404, 410):  # already gone
                return None
            raise
        if not ((old.get("meta") or {}).get(KEY_META)):  # not brandforge's upload: a person's image stays
            return None
        try:
            await self._call(client, "DELETE", f"/wp/v2/media/{old_id}", "deleting the replaced media",
                             params={"force": "true"})
        except PublishError as exc:
            if exc.status_code not in (404, 410):
                raise
        return old_id

    async def _settle(self, client: httpx.AsyncClient, rest_base: str, key: str, mine: dict[str, Any]) -> dict[str, Any]:
        """Keep only the oldest item with this key: a concurrent publish (a duplicated webhook) may have raced us.

        WordPress has no unique constraint on meta, so both racers may create; each then
        looks again, and the one holding the younger item (higher id) removes it. The
        older one always exists by then, so exactly one survives whatever the interleaving.
        """
        oldest = await self._find(client, rest_base, key, f"the {rest_base} re-check")
        if oldest is None or oldest["id"] >= mine["id"]:
            return mine
        await self._call(
            client, "DELETE", f"/wp/v2/{rest_base}/{int(mine['id'])}", f"removing a duplicate {rest_base} item",
            params={"force": "true"},
        )
        return oldest

    async def _upload(self, client: httpx.AsyncClient, item: PublishItem) -> dict[str, Any]:
        try:
            data = Path(item.image_path).read_bytes()
        except OSError as exc:
            raise PublishError(f"cannot read the image to publish {item.image_path!r}: {exc}") from exc
        params = {
            "title": item.title or Path(item.name).stem,
            "alt_text": item.alt_text[:500],
            "caption": item.title or Path(item.name).stem,
            f"meta[{KEY_META}]": item.publish_key,
            f"meta[{SOURCE_META}]": item.source_uri,
            "context": "edit",
        }
        media = await self._call(
            client, "POST", "/wp/v2/media", "the media upload", params=params, content=data,
            headers={"Content-Type": item.content_type, "Content-Disposition": f'attachment; filename="{_safe_filename(item)}"'},
        )
        if (media.get("meta") or {}).get(KEY_META) != item.publish_key:
            raise PublishError(f"WordPress at {self.url} dropped the generation key from the uploaded media; {PLUGIN_HINT}")
        return media

    async def _create_entry(self, client: httpx.AsyncClient, item: PublishItem, media: dict[str, Any]) -> dict[str, Any]:
        src, alt = html.escape(media.get("source_url") or "", quote=True), html.escape(item.alt_text, quote=True)
        content = (
            f'<!-- wp:image {{"id":{int(media["id"])}}} -->\n'
            f'<figure class="wp-block-image"><img src="{src}" alt="{alt}" class="wp-image-{int(media["id"])}"/></figure>\n'
            "<!-- /wp:image -->"
        )
        body = {
            "title": item.title or Path(item.name).stem,
            "status": self.status,
            "featured_media": media["id"],
            "content": content,
            "meta": {KEY_META: item.publish_key, SOURCE_META: item.source_uri},
        }
        return await self._call(
            client, "POST", f"/wp/v2/{self.post_type}", f"creating the {self.post_type} entry",
            params={"context": "edit"}, json=body,
        )
