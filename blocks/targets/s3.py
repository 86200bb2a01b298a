"""S3Target: publish images to an S3 bucket (prefect-aws `S3Bucket`), exactly once.

The object key follows a layout (client / format / asset key by default), the
object carries its content type and cache headers, and its metadata carries the
generation key and the output key (the generation through its post-processing).
A retry or rerun finds the object with a HEAD request and does not upload again
when the output key matches; an object at the same key with another output is
replaced: the same generation through a changed chain (the default layout), or
any republish when the layout has no generation key in it ("the current image
of this asset"). A republish that lands on another key (a new generation under the
default layout) deletes the asset's earlier object once the new one is written.

boto3 is synchronous: calls run in a worker thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import re
import string
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from prefect_aws import S3Bucket
from pydantic import Field, field_validator

from brandforge.blocks.targets.base import PublishTarget
from brandforge.models import PublishError, PublishItem, PublishReceipt

LAYOUT_SLOTS = {"client", "format", "asset_key", "generation_key", "name", "recipe", "ext"}
_KEY_SLOTS = {"asset_key", "generation_key"}
_TRUNCATION = re.compile(r"\.[0-9]{1,2}")
MIN_KEY_CHARS = 8
MAX_KEY_BYTES = 1024  # S3's limit on an object key
_RETRYABLE_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling", "ThrottlingException"}
_HINTS = {
    "NoSuchBucket": "the bucket does not exist; check bucket_name",
    "AccessDenied": "the credentials may not write there; check the IAM policy",
    "InvalidAccessKeyId": "the access key is unknown; check the AwsCredentials block",
    "SignatureDoesNotMatch": "the secret key is wrong; check the AwsCredentials block",
    "EntityTooLarge": "the file is larger than the bucket accepts",
}


def _slug(value: str, empty: str = "x") -> str:
    """A value safe inside an S3 key segment: letters, digits, dot, dash, underscore; at most 120 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-.")[:120] or empty


def _format_of(item: PublishItem) -> str:
    subtype = item.content_type.split("/", 1)[-1].split(";")[0].strip().lower()
    return {"jpg": "jpeg", "svg+xml": "svg"}.get(subtype, subtype) or "bin"


class S3Target(PublishTarget):
    """An S3 bucket (or any S3-compatible store) as a publish target."""

    _block_type_name = "Brandforge S3 Target"
    _block_type_slug = "brandforge-s3-target"
    _description = "Publishes images to an S3 bucket with a key layout, cache headers and the generation key as metadata."

    target_name: ClassVar[str] = "s3"

    bucket: S3Bucket = Field(description="prefect-aws S3Bucket (its bucket_folder prefixes every key).")
    key_layout: str = Field(
        "{client}/{format}/{asset_key:.16}-{generation_key:.12}.{ext}",
        description="Object key; slots: {client} {format} {asset_key} {generation_key} {name} {recipe} {ext}.",
    )
    cache_control: str = Field("public, max-age=31536000, immutable", description="Cache-Control header of every object.")
    public_base_url: str | None = Field(None, description="CDN or website address of the bucket; URLs are s3:// without it.")

    def destination(self) -> str:
        params = self.bucket.credentials.aws_client_parameters
        endpoint = getattr(params, "endpoint_url", None) or "aws"
        return f"{endpoint}/{self.bucket.bucket_name}/{(self.bucket.bucket_folder or '').strip('/')}/{self.key_layout}"

    @field_validator("key_layout")
    @classmethod
    def _layout(cls, v: str) -> str:
        try:
            slots = {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}
        except ValueError as exc:
            raise ValueError(f"key_layout is not a valid template: {exc}") from exc
        unknown = slots - LAYOUT_SLOTS
        if unknown:
            raise ValueError(f"key_layout uses unknown slots {sorted(unknown)}; allowed: {sorted(LAYOUT_SLOTS)}")
        for _, name, spec, conversion in string.Formatter().parse(v):
            if name is None:
                continue
            if conversion:
                raise ValueError(f"key_layout slot {{{name}!{conversion}}}: conversions are not allowed; write {{{name}}}")
            # The one spec allowed shortens a key (`{generation_key:.12}`): long enough to stay unique.
            if spec and not (name in _KEY_SLOTS and _TRUNCATION.fullmatch(spec)
                             and MIN_KEY_CHARS <= int(spec[1:]) <= 64):
                raise ValueError(f"key_layout slot {{{name}:{spec}}}: the only format allowed is a key shortened to "
                                 f"{MIN_KEY_CHARS}-64 characters ({{asset_key:.16}}, {{generation_key:.12}}); "
                                 "no padding, widths or other formats")
        if not slots & {"generation_key", "asset_key", "name"}:
            raise ValueError("key_layout must contain {generation_key}, {asset_key} or {name}, or every image lands on one key")
        return v

    def object_key(self, item: PublishItem) -> str:
        key = self.key_layout.format(
            client=_slug(item.client), format=_slug(_format_of(item)), asset_key=item.source_key or item.generation_key,
            generation_key=item.generation_key, name=_slug(Path(item.name).stem, "image"),
            recipe=_slug(str(item.params.get("recipe") or "default"), "default"),
            ext=_slug(Path(item.image_path).suffix.lstrip(".").lower() or _format_of(item), "bin"),
        )
        folder = (self.bucket.bucket_folder or "").strip("/")
        key = f"{folder}/{key}" if folder else key
        if len(key.encode()) > MAX_KEY_BYTES:
            raise PublishError(f"object key would be {len(key.encode())} bytes; S3 allows {MAX_KEY_BYTES} (shorten key_layout)")
        return key

    def _url(self, key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{quote(key)}"
        return f"s3://{self.bucket.bucket_name}/{key}"

    def _error(self, what: str, exc: Exception) -> PublishError:
        where = f"s3://{self.bucket.bucket_name}"
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            retryable = code in _RETRYABLE_CODES or (status or 0) >= 500
            hint = _HINTS.get(code, "")
            return PublishError(
                f"S3 answered {status} {code} to {what} in {where}" + (f" ({hint})" if hint else ""),
                retryable=retryable, status_code=status,
            )
        retryable = isinstance(exc, (EndpointConnectionError, BotoCoreError, ConnectionError, TimeoutError))
        return PublishError(f"S3 {what} in {where} failed: {type(exc).__name__}: {exc}", retryable=retryable)

    async def _head(self, key: str) -> dict[str, Any] | None:
        client = self.bucket.credentials.get_s3_client()
        try:
            return await asyncio.to_thread(client.head_object, Bucket=self.bucket.bucket_name, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("the lookup", exc) from exc
        except Exception as exc:  # noqa: BLE001 - classified into retryable or not
            raise self._error("the lookup", exc) from exc

    def _receipt(self, key: str, head: dict[str, Any], already_existed: bool) -> PublishReceipt:
        return PublishReceipt(
            target=self.target_name, url=self._url(key), already_existed=already_existed,
            remote_ids={
                "bucket": self.bucket.bucket_name, "key": key, "etag": str(head.get("ETag", "")).strip('"'),
                "version_id": head.get("VersionId"),
            },
        )

    async def find_existing(self, item: PublishItem) -> PublishReceipt | None:
        key = self.object_key(item)
        head = await self._head(key)
        meta = (head or {}).get("Metadata", {})
        # The output key decides: the same generation through a changed chain is a new image, and
        # with a layout keyed by asset and generation it replaces the earlier one at the same key.
        if head and meta.get("output-key", meta.get("generation-key")) == item.publish_key:
            return self._receipt(key, head, already_existed=True)
        return None

    async def publish(self, item: PublishItem, replaces: dict | None = None) -> PublishReceipt:
        existing = await self.find_existing(item)
        if existing:
            await self._drop_replaced(replaces, existing.remote_ids["key"])  # a run died before the delete
            return existing
        key = self.object_key(item)
        # S3 metadata travels as HTTP headers: ASCII only.
        metadata = {
            "generation-key": item.generation_key,
            "output-key": item.publish_key,
            "source-uri": quote(item.source_uri, safe=":/@"),
            "client": item.client,
        }
        if item.source_key:
            metadata["source-key"] = item.source_key
        if item.params.get("recipe"):
            metadata["recipe"] = quote(str(item.params["recipe"]), safe="")
        try:
            body = Path(item.image_path).read_bytes()
        except OSError as exc:
            raise PublishError(f"cannot read the image to publish {item.image_path!r}: {exc}") from exc
        client = self.bucket.credentials.get_s3_client()
        try:
            put = await asyncio.to_thread(
                client.put_object, Bucket=self.bucket.bucket_name, Key=key, Body=body,
                ContentType=item.content_type, CacheControl=self.cache_control, Metadata=metadata,
            )
        except Exception as exc:  # noqa: BLE001 - classified into retryable or not
            raise self._error("the upload", exc) from exc
        await self._drop_replaced(replaces, key)
        return self._receipt(key, put, already_existed=False)

    async def _drop_replaced(self, replaces: dict | None, key: str) -> None:
        """Delete the asset's replaced object when it lay at another key of this bucket (a new generation
        under a layout keyed by generation): one object per asset, as on the other targets. The new
        object is written first, so a crash in between leaves the old one, which the rerun deletes."""
        old = (replaces or {}).get("key")
        if not old or old == key or (replaces or {}).get("bucket") != self.bucket.bucket_name:
            return
        client = self.bucket.credentials.get_s3_client()
        try:
            await asyncio.to_thread(client.delete_object, Bucket=self.bucket.bucket_name, Key=old)
        except Exception as exc:  # noqa: BLE001 - classified into retryable or not
            raise self._error("deleting the replaced object", exc) from exc
