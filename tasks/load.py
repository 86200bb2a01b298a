"""Load: list a catalog and turn each source file into a validated, normalised image.

Sources are read only from where the client's profile says they live: `s3://` objects from its
bucket, `file://` files under its source storage root (symlinks resolved), and `http(s)://` URLs
downloaded through the URL guard (blocks/url_guard.py: address policy, redirects re-checked, a
size cap, a timeout). Anything else is refused with the reason before any byte is read.

Accepts JPEG, PNG, WebP and TIFF; applies EXIF orientation; converts CMYK,
palette, 16-bit and alpha images to 8-bit sRGB; downscales anything over
2048 px or 8 MB. Rejects, with a reason a person can act on, zero-byte files,
non-images, truncated files and decompression bombs.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import warnings
from pathlib import Path
from urllib.parse import urlparse

import httpx

import numpy as np
from PIL import Image, ImageCms, ImageOps
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.filesystems import LocalFileSystem
from prefect_aws import S3Bucket

from brandforge.blocks.http import reason_from_body, safe_url, sync_client
from brandforge.blocks.url_guard import UrlPolicy, UrlRefused, local_path_under, parse_host
from brandforge.models import AssetRecord, AssetRef, AssetRejected, InvalidInput, LoadedAsset, Transient, content_hash, name_problem
from brandforge.tasks.retry import retry_unless_refused

ALLOWED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "TIFF": "TIFF", "MPO": "JPEG"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
MAX_SIDE = 2048
MAX_BYTES = 8 * 1024 * 1024
# Anything above this many pixels is refused before decoding (a bomb, or a scan no one meant to send).
MAX_PIXELS = 80_000_000
# Largest source downloaded over HTTP (bigger files are downscaled after loading, up to this).
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 60.0


def list_local(folder: str | Path, pattern: str = "*") -> list[str]:
    """Relative paths of candidate source files under `folder`, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise AssetRejected(f"source folder {str(root)!r} does not exist or is not a folder")
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and fnmatch.fnmatch(p.name, pattern)
    )


def source_uri(storage: LocalFileSystem | S3Bucket, name: str) -> str:
    if isinstance(storage, S3Bucket):
        folder = storage.bucket_folder.strip("/")
        key = f"{folder}/{name}" if folder else name
        return f"s3://{storage.bucket_name}/{key}"
    return (Path(storage.basepath or ".") / name).resolve().as_uri()


@task(name="list-catalog", retries=2, retry_delay_seconds=2)
def list_catalog(
    storage: LocalFileSystem | S3Bucket, client: str, pattern: str = "*", limit: int | None = None, exclude_prefix: str | None = None
) -> list[AssetRef]:
    """Every file in the client's source storage (non-images included: load rejects them with a reason),
    except those under `exclude_prefix` (where published sources are archived)."""
    if isinstance(storage, S3Bucket):
        folder = storage.bucket_folder.strip("/")
        names = []
        for obj in storage.list_objects():
            key = obj["Key"]
            name = key[len(folder) + 1 :] if folder and key.startswith(folder + "/") else key
            if name and not name.endswith("/") and fnmatch.fnmatch(Path(name).name, pattern):
                names.append(name)
        names.sort()
    else:
        names = list_local(storage.basepath or ".", pattern)
    if exclude_prefix:
        names = [n for n in names if not n.startswith(exclude_prefix.rstrip("/") + "/")]
    names, records = catalog_records(storage, names)
    if limit:
        names = names[:limit]
    return [AssetRef(client=client, uri=source_uri(storage, n), name=n, record=records.get(n)) for n in names]


# --------------------------------------------------------------------------- asset records (sidecars, manifests)

MANIFEST_NAMES = ("manifest.json", "manifest.csv")
MANIFEST_FILE_KEYS = ("file", "path", "source", "filename")


def _read_text(storage: LocalFileSystem | S3Bucket, name: str) -> str:
    if isinstance(storage, S3Bucket):
        return storage.read_path(name).decode("utf-8-sig")
    return (Path(storage.basepath or ".") / name).read_text(encoding="utf-8-sig")


def manifest_rows(text: str, manifest: str) -> dict[str, dict]:
    """{file name: its fields} from a catalog manifest: CSV with a `file` column, or JSON (a list of objects
    with `file`, or an object keyed by file name). Paths are relative to the manifest's folder."""
    if manifest.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"manifest {manifest}: not valid JSON ({exc})") from exc
        rows = [{"file": k, **v} for k, v in data.items() if isinstance(v, dict)] if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise InvalidInput(f"manifest {manifest}: expected a list of objects or an object keyed by file name")
    found: dict[str, dict] = {}
    parent = Path(manifest).parent.as_posix()
    folder = "" if parent == "." else parent
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InvalidInput(f"manifest {manifest}: row {i + 1} is not an object")
        file = next((row[k] for k in MANIFEST_FILE_KEYS if row.get(k)), None)
        if not file:
            raise InvalidInput(f"manifest {manifest}: row {i + 1} names no file (column one of {list(MANIFEST_FILE_KEYS)})")
        fields = {k: v for k, v in row.items() if k not in MANIFEST_FILE_KEYS and v not in (None, "")}
        found[f"{folder}/{file}" if folder else str(file)] = fields
    return found


def catalog_records(storage: LocalFileSystem | S3Bucket, names: list[str]) -> tuple[list[str], dict[str, AssetRecord]]:
    """The catalog's images without its record files, and each image's record: its manifest row (a
    `manifest.json` / `manifest.csv` in its folder or above) under its sidecar (`<file>.json` or
    `<stem>.json` next to it). A record file that cannot be read is an InvalidInput naming it."""
    present = set(names)
    manifests = sorted((n for n in names if Path(n).name in MANIFEST_NAMES), key=lambda n: n.count("/"))
    sidecars = {n for n in names if n.endswith(".json") and Path(n).name not in MANIFEST_NAMES
                and (n[:-5] in present or any(m != n and Path(m).with_suffix(".json").as_posix() == n for m in present))}
    images = [n for n in names if n not in sidecars and Path(n).name not in MANIFEST_NAMES]
    rows: dict[str, dict] = {}
    for manifest in manifests:  # a deeper manifest's row wins over a shallower one's
        rows.update(manifest_rows(_read_text(storage, manifest), manifest))
    records: dict[str, AssetRecord] = {}
    for name in images:
        record = AssetRecord.from_mapping(rows[name], origin="manifest") if name in rows else None
        for sidecar in (f"{name}.json", Path(name).with_suffix(".json").as_posix()):
            if sidecar in sidecars and sidecar != name:
                try:
                    data = json.loads(_read_text(storage, sidecar))
                except ValueError as exc:
                    raise InvalidInput(f"sidecar {sidecar}: not valid JSON ({exc})") from exc
                if not isinstance(data, dict):
                    raise InvalidInput(f"sidecar {sidecar}: expected a JSON object of record fields")
                side = AssetRecord.from_mapping(data, origin="sidecar")
                record = record.merged(side) if record else side
                break
        if record is not None:
            records[name] = record
    return images, records


def s3_object_record(storage: S3Bucket, name: str) -> AssetRecord | None:
    """A record from an S3 source object's own tags and user metadata (`x-amz-meta-*`): a tag `category=mugs`,
    metadata `x-amz-meta-product-name: Blue Mug` (→ the record's name). Keys take the record's aliases, with
    dashes read as underscores; a tag wins over metadata of the same name; unknown keys (brandforge's own
    `brandforge-*` tags among them) are ignored. None when the object has neither."""
    folder = storage.bucket_folder.strip("/")
    key = f"{folder}/{name}" if folder else name
    client = storage.credentials.get_s3_client()
    try:
        metadata = client.head_object(Bucket=storage.bucket_name, Key=key).get("Metadata", {})
        tags = {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=storage.bucket_name, Key=key)["TagSet"]}
    except Exception as exc:  # noqa: BLE001 - botocore's ClientError / EndpointConnectionError alike
        raise Transient(f"s3://{storage.bucket_name}/{key}: cannot read its tags and metadata: {exc}") from exc
    fields = {k.lower().replace("-", "_"): v for k, v in {**metadata, **tags}.items()}
    return AssetRecord.from_mapping(fields, origin="s3") if fields else None


def _to_srgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """8-bit RGB in sRGB, whatever came in."""
    icc = img.info.get("icc_profile")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() or 1.0
        img = Image.fromarray((arr * (255.0 / (65535.0 if peak > 255 else 255.0))).clip(0, 255).astype(np.uint8), "L")
        notes.append("16-bit reduced to 8-bit")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        img = Image.fromarray(((arr - lo) / ((hi - lo) or 1.0) * 255).astype(np.uint8), "L")
        notes.append("float image scaled to 8-bit")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparency flattened onto white")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "CMYK":
        if icc:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                img = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
                icc = None
            except (ImageCms.PyCMSError, OSError):
                img = img.convert("RGB")
        else:
            img = img.convert("RGB")
        notes.append("CMYK converted to sRGB")
    elif icc and img.mode in ("RGB", "L"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            img = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            notes.append("embedded colour profile converted to sRGB")
        except (ImageCms.PyCMSError, OSError):
            pass
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def normalise_image(data: bytes) -> tuple[Image.Image, str, list[str]]:
    """Validate and normalise source bytes; returns (RGB image, original format, notes).

    Raises AssetRejected with a reason for anything that is not a usable image.
    """
    if not data:
        raise AssetRejected("empty file (0 bytes); expected a JPEG, PNG, WebP or TIFF image")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AssetRejected(f"decompression bomb refused: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for garbage
        raise AssetRejected(f"not an image ({type(exc).__name__}); expected JPEG, PNG, WebP or TIFF") from exc
    fmt = ALLOWED_FORMATS.get(img.format or "")
    if fmt is None:
        raise AssetRejected(f"unsupported format {img.format}; allowed: JPEG, PNG, WebP, TIFF")
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise AssetRejected(
            f"decompression bomb refused: {width}x{height} = {width * height / 1e6:.0f} MP exceeds {MAX_PIXELS / 1e6:.0f} MP"
        )
    if width < 16 or height < 16:
        raise AssetRejected(f"image too small: {width}x{height}; at least 16x16 pixels are needed")
    # Decode large JPEGs at a reduced scale straight away (cheap and memory-bounded).
    if fmt == "JPEG" and max(width, height) > 2 * MAX_SIDE:
        img.draft("RGB", (MAX_SIDE, MAX_SIDE))
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001
        raise AssetRejected(f"corrupt or truncated {fmt} file: {exc}") from exc
    frames = getattr(img, "n_frames", 1)  # read before exif_transpose: its copy is a single frame
    try:
        img = ImageOps.exif_transpose(img)
        if img is None:
            raise AssetRejected("EXIF orientation could not be applied")
    except AssetRejected:
        raise
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
        notes.append("EXIF orientation unreadable, ignored")
    if frames > 1:
        notes.append(f"multi-frame file ({frames} frames): first frame used")
    img = _to_srgb(img, notes)
    limit = MAX_SIDE
    if len(data) > MAX_BYTES:
        # Shrink the pixel count in proportion to the file's excess size.
        scale = (MAX_BYTES / len(data)) ** 0.5
        limit = min(limit, max(256, int(max(img.size) * scale)))
    if max(img.size) > limit:
        before = img.size
        img.thumbnail((limit, limit), Image.Resampling.LANCZOS)
        notes.append(f"downscaled from {before[0]}x{before[1]} to {img.width}x{img.height}")
    return img, fmt, notes


def local_source_path(uri: str, storage: LocalFileSystem | S3Bucket | None) -> Path:
    """The file a `file://` source names, refused unless it lies under the client's source storage root."""
    try:
        return local_path_under(uri, storage.basepath if isinstance(storage, LocalFileSystem) else None)
    except UrlRefused as exc:
        raise AssetRejected(f"file:// source {exc.url} refused: {exc.why}") from exc


def download_source(url: str, *, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """An http(s) source's bytes, through the URL guard; no credentials are sent."""
    try:
        parse_host(url, UrlPolicy.from_env())  # the syntax rules on the URL as given, before httpx reads it
        with sync_client(timeout_s) as client, client.stream("GET", url) as resp:
            if resp.status_code >= 400:
                resp.read()
                what = f"source {safe_url(url)} answered HTTP {resp.status_code}: {reason_from_body(resp)}"
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise Transient(what)
                raise AssetRejected(what)
            data = bytearray()
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise AssetRejected(f"source {safe_url(url)} is larger than {max_bytes:,} bytes")
            return bytes(data)
    except UrlRefused as exc:
        raise AssetRejected(f"source {exc}") from exc
    except httpx.TooManyRedirects as exc:
        raise AssetRejected(f"source {safe_url(url)}: too many redirects") from exc
    except httpx.TimeoutException as exc:
        raise Transient(f"source {safe_url(url)} did not answer within {timeout_s:g} s") from exc
    except httpx.TransportError as exc:
        raise Transient(f"source {safe_url(url)} could not be reached: {type(exc).__name__}") from exc


def read_source_bytes(ref: AssetRef, storage: LocalFileSystem | S3Bucket | None) -> bytes:
    """The source's bytes from where its scheme says, within the client's own storage."""
    scheme = urlparse(ref.uri).scheme.lower()
    if scheme == "s3":
        if not isinstance(storage, S3Bucket):
            raise AssetRejected(f"s3:// source {ref.uri} refused: the client's source storage is not an S3 bucket")
        bucket, _, key = ref.uri[len("s3://"):].partition("/")  # keys are written raw, never URL-encoded
        folder = storage.bucket_folder.strip("/")
        if bucket != storage.bucket_name or key != (f"{folder}/{ref.name}" if folder else ref.name):
            raise AssetRejected(f"s3:// source {ref.uri} refused: not the object {ref.name!r} of the client's bucket "
                                f"{storage.bucket_name!r}")
        return storage.read_path(ref.name)
    if scheme in ("http", "https"):
        return download_source(ref.uri)
    if scheme == "file":
        path = local_source_path(ref.uri, storage)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise AssetRejected(f"source file not found: {ref.uri}") from exc
        except IsADirectoryError as exc:
            raise AssetRejected(f"source {ref.uri} is a folder, not a file") from exc
    raise AssetRejected(f"source {ref.uri[:200]!r} refused: expected an s3://, file://, http:// or https:// URI")


@task(name="load-asset", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_refused, cache_policy=NO_CACHE)
def load_asset(ref: AssetRef, storage: LocalFileSystem | S3Bucket | None, work_dir: str) -> LoadedAsset:
    """Read one source, validate it and write the normalised copy into the work folder."""
    problem = name_problem(ref.name)
    if problem:  # before a byte is read or a generation paid for (the name reaches keys, file names, posts)
        raise AssetRejected(f"source name {ref.name[:80]!r} refused: {problem}")
    data = read_source_bytes(ref, storage)
    record = ref.record
    if isinstance(storage, S3Bucket) and urlparse(ref.uri).scheme.lower() == "s3":
        # The object's tags and metadata under the catalog's own records (manifest, sidecar, CMS entry).
        tagged = s3_object_record(storage, ref.name)
        record = tagged.merged(record) if tagged else record
    key = content_hash(data)
    img, fmt, notes = normalise_image(data)
    folder = Path(work_dir) / ref.client / key[:16]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "source.png"
    img.save(path, format="PNG")
    return LoadedAsset(
        client=ref.client, uri=ref.uri, name=ref.name, source_key=key, path=str(path.resolve()),
        width=img.width, height=img.height, original_format=fmt, notes=notes, record=record,
    )
