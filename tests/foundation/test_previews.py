"""Signed previews: the gateway serves thumbnails of outputs and quarantined variants to signed, short-lived links.

The links come from `tasks.previews.preview_url` (what the artifacts and the review form embed); the
gateway's `GET /preview` is driven through Starlette's test client: a good link gives a thumbnail, an
expired, forged or altered one, a path outside the roots (`..`, a symlink out, another folder) gives 403.
"""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from PIL import Image
from starlette.testclient import TestClient

from brandforge.deployments.gateway import build_app
from brandforge.models import AssetOutcome
from brandforge.tasks import previews
from brandforge.tasks.previews import asset_preview, preview_secret, preview_url, signature


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A state folder with work, quarantine and gallery; no configured secret (one is generated)."""
    root = tmp_path / "state"
    for name in ("work", "quarantine", "gallery"):
        (root / name).mkdir(parents=True)
    monkeypatch.setenv("BRANDFORGE_STATE_DIR", str(root))
    for var in ("BRANDFORGE_PREVIEW_SECRET", "BRANDFORGE_PREVIEW_SECRET_BLOCK", "BRANDFORGE_PREVIEW_ROOTS",
                "BRANDFORGE_PUBLIC_URL", "BRANDFORGE_PREVIEW_TTL_S"):
        monkeypatch.delenv(var, raising=False)
    return root


@pytest.fixture
def client():
    return TestClient(build_app({}))


def image(path, size=(1600, 900), mode="RGB", colour=(200, 90, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


def relative(url: str) -> str:
    """The gateway-relative part of a preview link (the test client has its own host)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_a_signed_link_serves_a_small_cached_thumbnail(state, client):
    out = image(state / "work" / "demo" / "abc" / "final-0.jpg")
    url = preview_url(out)
    assert url.startswith("http://127.0.0.1:8700/preview?")  # the Makefile's gateway port
    answer = client.get(relative(url))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert "private" in answer.headers["cache-control"]
    thumb = Image.open(io.BytesIO(answer.content))
    assert thumb.format == "JPEG" and max(thumb.size) == 512 and thumb.size == (512, 288)
    cached = list((state / "previews").iterdir())
    assert len(cached) == 1
    # Served from the cache the second time (same bytes, nothing re-rendered).
    before = cached[0].stat().st_mtime_ns
    assert client.get(relative(url)).content == answer.content and cached[0].stat().st_mtime_ns == before

    small = client.get(relative(preview_url(out, size=192)))
    assert max(Image.open(io.BytesIO(small.content)).size) == 192


def test_transparent_images_stay_png_and_every_root_is_served(state, client):
    variant = image(state / "quarantine" / "demo" / "a" / "variant-1.png", (200, 300), "RGBA", (10, 20, 30, 0))
    answer = client.get(relative(preview_url(variant)))
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(answer.content)).size == (200, 300)  # never enlarged
    published = image(state / "gallery" / "demo" / "mug-0123.jpg")
    assert client.get(relative(preview_url(f"file://{published}"))).status_code == 200


def test_expired_forged_and_altered_links_are_refused(state, client):
    out = image(state / "work" / "a.jpg")
    other = image(state / "work" / "b.jpg")
    expired = preview_url(out, ttl_s=60, now=time.time() - 3600)
    assert client.get(relative(expired)).status_code == 403
    assert client.get(relative(expired)).json()["error"] == "link expired"

    good = query(preview_url(out))
    forged = {**good, "sig": ("0" if good["sig"][0] != "0" else "1") + good["sig"][1:]}
    longer = {**good, "expires": str(int(good["expires"]) + 86400)}  # stretching the expiry breaks the signature
    swapped = {**good, "path": str(other)}  # one file's signature does not open another
    for fields in (forged, longer, swapped, {**good, "sig": ""}, {"path": good["path"]}, {**good, "expires": "soon"}):
        answer = client.get(f"/preview?{urlencode(fields)}")
        assert answer.status_code == 403, fields
    # A signature made with another secret is forged too.
    alien = {**good, "sig": signature(good["path"], int(good["expires"]), key=b"someone else's secret")}
    assert client.get(f"/preview?{urlencode(alien)}").status_code == 403
    assert client.get(f"/preview?{urlencode(good)}").status_code == 200


def signed(path: str, ttl_s: int = 600) -> str:
    """A correctly signed link to any path, as someone holding the secret could make (the roots still apply)."""
    expires = int(time.time()) + ttl_s
    return "/preview?" + urlencode({"path": path, "expires": expires, "sig": signature(path, expires)})


def test_paths_outside_the_roots_are_refused_even_when_signed(state, client, tmp_path):
    secret_file = state / "preview-secret"
    image(state / "work" / "a.jpg")
    outside = image(tmp_path / "elsewhere" / "private.jpg")
    assert preview_url(outside) is None  # nothing to embed: the caller shows something else
    (state / "work" / "escape.jpg").symlink_to(outside)
    assert preview_url(state / "work" / "escape.jpg") is None
    work = state / "work"
    system_file = Path(Path("/").anchor, "etc", "passwd")  # a file of the host, outside every root
    for path in (f"{work}{os.sep}..{os.sep}preview-secret", os.path.join(work, "..", "..", "elsewhere", "private.jpg"),
                 str(outside), str(work / "escape.jpg"), "work/a.jpg", str(secret_file), str(system_file)):
        answer = client.get(signed(path))
        assert answer.status_code == 403, path
        assert secret_file.read_bytes() not in answer.content
    assert client.get(signed(str(work / "missing.jpg"))).status_code == 404
    (state / "work" / "notes.txt").write_text("not an image")
    assert client.get(signed(str(work / "notes.txt"))).status_code == 415


def test_the_secret_is_generated_once_and_kept_private(state, monkeypatch):
    previews._secret.cache_clear()
    key = preview_secret()
    path = state / "preview-secret"
    assert len(key) == 64 and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    previews._secret.cache_clear()
    assert preview_secret() == key  # another process reads the same one
    monkeypatch.setenv("BRANDFORGE_PREVIEW_SECRET", "configured")
    assert preview_secret() == b"configured"


def test_the_secret_can_come_from_a_prefect_secret_block(state, monkeypatch, prefect_server):
    from prefect.blocks.system import Secret

    Secret(value="from-a-block").save("bf-preview-test", overwrite=True)
    monkeypatch.setenv("BRANDFORGE_PREVIEW_SECRET_BLOCK", "bf-preview-test")
    assert preview_secret() == b"from-a-block"
    assert not (state / "preview-secret").exists()


def test_links_use_the_public_url_and_the_ttl(state, monkeypatch):
    out = image(state / "work" / "a.jpg")
    monkeypatch.setenv("BRANDFORGE_PUBLIC_URL", "https://previews.example.test/bf/")
    url = preview_url(out, ttl_s=120, now=1_000_000)
    assert url.startswith("https://previews.example.test/bf/preview?") and query(url)["expires"] == "1000120"
    monkeypatch.setenv("BRANDFORGE_PREVIEW_TTL_S", "900")
    assert query(preview_url(out, now=1_000_000))["expires"] == "1000900"


def test_the_catalog_table_cell_links_the_published_image(state):
    published = image(state / "gallery" / "demo" / "mug-0123.jpg")
    work = image(state / "work" / "demo" / "final-0.jpg")
    outcome = AssetOutcome(client="demo", source_uri="x", name="mug.png", state="published",
                           published_url=f"file://{published}", output_uris=[str(work)])
    cell = asset_preview(outcome)
    assert cell.startswith("![mug.png](http://127.0.0.1:8700/preview?") and query(cell[len("![mug.png]("):-1])["path"] == str(published)
    remote = outcome.model_copy(update={"published_url": "https://cms/x.jpg", "output_uris": ["s3://b/k.jpg"]})
    assert asset_preview(remote) == ""  # never a data: URI or a path in a table cell
    os.remove(published)
    assert query(asset_preview(outcome)[len("![mug.png]("):-1])["path"] == str(work)
