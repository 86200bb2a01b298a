"""Source handling after a publish: leave the source, tag it, or move it to an archive.

Runs only after the publish is recorded in the ledger (the flow calls it after
`record_outcome`), so a source is never archived for an image that is not on
record. Every mode is idempotent: a rerun after a crash finishes the job
instead of failing on a source that was already moved.

- S3 sources (s3://bucket/key): `tag` adds object tags; `move` copies the
  object to `<archive_prefix><key>` (metadata and tags kept) and then deletes
  the original.
- Local files: `tag` writes a hidden sidecar `.<name>.brandforge.json` beside
  the file; `move` renames it into `<archive_prefix>` under the storage folder.

Only the client's own source storage is ever touched: a local file outside its
storage root (symlinks resolved), or any local file when the storage is S3, is
refused with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from botocore.exceptions import ClientError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.filesystems import LocalFileSystem
from prefect_aws import S3Bucket

from brandforge.models import AssetRef, InvalidInput
from brandforge.tasks.retry import retry_unless_refused

SourceHandling = Literal["leave", "tag", "move"]
HANDLING_MODES = ("leave", "tag", "move")
TAG_KEY = "brandforge-published"


def _s3_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def _s3_exists(client, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if _s3_missing(exc):
            return False
        raise


def handle_s3_source(uri: str, storage: S3Bucket, mode: SourceHandling, archive_prefix: str, generation_key: str) -> str:
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, unquote(parsed.path.lstrip("/"))
    if bucket != storage.bucket_name:
        raise InvalidInput(f"source {uri} is not in the storage bucket {storage.bucket_name!r}; cannot {mode} it")
    client = storage.credentials.get_s3_client()
    prefix = archive_prefix.strip("/") + "/"
    if mode == "move" and key.startswith(prefix):
        return f"already in the archive at s3://{bucket}/{key}"
    if mode == "tag":
        tags = {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
        tags[TAG_KEY] = generation_key
        client.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
        return f"tagged s3://{bucket}/{key} {TAG_KEY}={generation_key[:12]}…"
    dest = f"{prefix}{key}"
    if not _s3_exists(client, bucket, key):
        if _s3_exists(client, bucket, dest):
            return f"already moved to s3://{bucket}/{dest}"
        raise InvalidInput(f"source {uri} is gone and not in the archive at s3://{bucket}/{dest}")
    client.copy_object(
        Bucket=bucket, Key=dest, CopySource={"Bucket": bucket, "Key": key},
        MetadataDirective="COPY", TaggingDirective="COPY",
    )
    # Delete only once the copy is confirmed: a crash in between leaves two copies, never none.
    if not _s3_exists(client, bucket, dest):
        raise RuntimeError(f"copy of {uri} to s3://{bucket}/{dest} did not appear; source kept")
    client.delete_object(Bucket=bucket, Key=key)
    return f"moved to s3://{bucket}/{dest}"


def handle_local_source(
    uri: str, storage: LocalFileSystem | None, mode: SourceHandling, archive_prefix: str, generation_key: str,
    published_url: str | None,
) -> str:
    if storage is None or not storage.basepath:
        raise InvalidInput(f"source {uri} is a local file but the client has no local source storage root; "
                           f"cannot {mode} it")
    root = Path(storage.basepath).expanduser().resolve()
    path = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)
    if not path.resolve().is_relative_to(root):
        raise InvalidInput(f"source {uri} is outside the client's source storage root {root}; cannot {mode} it")
    if mode == "tag":
        if not path.exists():
            raise InvalidInput(f"source {path} does not exist; cannot tag it")
        sidecar = path.with_name(f".{path.name}.brandforge.json")
        tmp = sidecar.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({
                "state": "published", "generation_key": generation_key, "published_url": published_url,
                "at": datetime.now(timezone.utc).isoformat(),
            }, indent=2))
            tmp.replace(sidecar)
        finally:
            tmp.unlink(missing_ok=True)
        return f"tagged {path} ({sidecar.name})"
    rel = path.resolve().relative_to(root)
    archive = Path(archive_prefix.strip("/"))
    if rel.parts[: len(archive.parts)] == archive.parts or path.parent.name == archive.name:
        return f"already in the archive at {path}"
    dest = root / archive / rel
    if not path.exists():
        if dest.exists():
            return f"already moved to {dest}"
        raise InvalidInput(f"source {path} is gone and not in the archive at {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(path, dest)
    except OSError:
        shutil.move(str(path), str(dest))  # across file systems
    return f"moved to {dest}"


@task(name="handle-source", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_refused, cache_policy=NO_CACHE)
def handle_source(
    asset: AssetRef, storage: LocalFileSystem | S3Bucket | None, mode: SourceHandling, archive_prefix: str,
    generation_key: str, published_url: str | None = None,
) -> str:
    """Apply the profile's `source_handling` to a source whose publish is recorded; says what it did."""
    if mode not in HANDLING_MODES:
        raise InvalidInput(f"source_handling must be one of {', '.join(HANDLING_MODES)} (got {mode!r})")
    if mode == "leave":
        return "left in place"
    scheme = urlparse(asset.uri).scheme
    if scheme == "s3":
        if not isinstance(storage, S3Bucket):
            raise InvalidInput(f"source {asset.uri} is on S3 but the storage is not an S3Bucket; cannot {mode} it")
        done = handle_s3_source(asset.uri, storage, mode, archive_prefix, generation_key)
    elif scheme in ("file", ""):  # a plain path is a local file too
        done = handle_local_source(
            asset.uri, storage if isinstance(storage, LocalFileSystem) else None, mode, archive_prefix, generation_key, published_url,
        )
    elif scheme in ("http", "https"):  # a CMS's file (Strapi media): not ours to tag or move
        done = f"left in place: {mode} applies to the client's own source storage, not to {scheme} URLs"
    else:
        raise InvalidInput(f"source_handling {mode!r} needs an s3:// or file:// source (got {asset.uri})")
    get_run_logger().info("%s: source %s", asset.name, done)
    return done
