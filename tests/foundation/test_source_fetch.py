"""Sources are read only from the client's own storage; http(s) sources are fetched through the URL guard."""

from __future__ import annotations

import pytest
from prefect.filesystems import LocalFileSystem
from prefect_aws import S3Bucket

from brandforge.models import AssetRef, AssetRejected, InvalidInput
from brandforge.tasks.archive import handle_local_source
from brandforge.tasks.load import load_asset
from tests.fakes.internal import png_bytes


def ref(uri: str, name: str = "x.png") -> AssetRef:
    return AssetRef(client="demo", uri=uri, name=name)


def test_an_http_source_is_downloaded_and_loaded(internal, tmp_path):
    loaded = load_asset.fn(ref(f"{internal.url}/image.png"), None, str(tmp_path))
    assert (loaded.width, loaded.height) == (64, 48) and loaded.original_format == "PNG"
    assert internal.hits[-1]["authorization"] is None


@pytest.mark.parametrize("url", ["http://localhost:{port}/image.png", "http://0x7f000001:{port}/image.png",
                                 "http://0177.0.0.1:{port}/image.png", "http://169.254.169.254/latest/meta-data/",
                                 "{url}/redirect?to=http://localhost:{port}/image.png", "ftp://127.0.0.1/x.png"])
def test_hostile_source_urls_are_refused_before_any_connection(internal, tmp_path, url):
    url = url.format(port=internal.port, url=internal.url)
    before = [h["path"] for h in internal.hits]
    with pytest.raises(AssetRejected, match="refused"):
        load_asset.fn(ref(url), None, str(tmp_path))
    made = [h["path"] for h in internal.hits][len(before):]
    assert made in ([], ["/redirect"])  # at most the first, allowed hop; never the refused one


def test_a_missing_http_source_is_rejected_with_a_summary(internal, tmp_path):
    with pytest.raises(AssetRejected, match="answered HTTP 403") as info:
        load_asset.fn(ref(f"{internal.url}/forbidden"), None, str(tmp_path))
    assert "internal-secret-token" not in str(info.value)


def catalog_with_outsider(tmp_path):
    root, other = tmp_path / "acme", tmp_path / "globex"
    root.mkdir(), other.mkdir()
    (root / "mine.png").write_bytes(png_bytes())
    (other / "theirs.png").write_bytes(png_bytes())
    (root / "link.png").symlink_to(other / "theirs.png")
    return root, other


def test_file_sources_are_read_only_under_the_clients_root(tmp_path):
    root, other = catalog_with_outsider(tmp_path)
    storage = LocalFileSystem(basepath=str(root))
    assert load_asset.fn(ref((root / "mine.png").as_uri()), storage, str(tmp_path / "w")).width == 64
    for uri in ((other / "theirs.png").as_uri(), f"file://{root}/../globex/theirs.png", (root / "link.png").as_uri()):
        with pytest.raises(AssetRejected, match="outside the client's source storage root"):
            load_asset.fn(ref(uri), storage, str(tmp_path / "w"))
    with pytest.raises(AssetRejected, match="no local source storage root"):
        load_asset.fn(ref((root / "mine.png").as_uri()), None, str(tmp_path / "w"))
    with pytest.raises(AssetRejected, match="no local source storage root"):
        load_asset.fn(ref((root / "mine.png").as_uri()), S3Bucket(bucket_name="acme-photos"), str(tmp_path / "w"))


def test_s3_sources_must_be_the_clients_bucket(tmp_path):
    storage = S3Bucket(bucket_name="acme-photos", bucket_folder="catalog")
    for uri, name in (("s3://globex-photos/catalog/x.png", "x.png"), ("s3://acme-photos/other/x.png", "x.png")):
        with pytest.raises(AssetRejected, match="not the object"):
            load_asset.fn(ref(uri, name), storage, str(tmp_path))
    with pytest.raises(AssetRejected, match="not an S3 bucket"):
        load_asset.fn(ref("s3://acme-photos/catalog/x.png"), LocalFileSystem(basepath=str(tmp_path)), str(tmp_path))


def test_source_handling_touches_only_the_clients_root(tmp_path):
    root, other = catalog_with_outsider(tmp_path)
    storage = LocalFileSystem(basepath=str(root))
    for mode in ("move", "tag"):
        with pytest.raises(InvalidInput, match="outside the client's source storage root"):
            handle_local_source((other / "theirs.png").as_uri(), storage, mode, "archive/", "k" * 64, None)
        with pytest.raises(InvalidInput, match="no local source storage root"):
            handle_local_source((root / "mine.png").as_uri(), None, mode, "archive/", "k" * 64, None)
    assert sorted(p.name for p in other.iterdir()) == ["theirs.png"]
    assert handle_local_source((root / "mine.png").as_uri(), storage, "move", "archive/", "k" * 64, None).startswith("moved")


@pytest.mark.usefixtures("prefect_server")
def test_remote_sources_are_left_in_place_not_failed():
    from brandforge.tasks.archive import handle_source

    asset = ref("https://cms.example.test/uploads/mug.jpg", "mug.jpg")
    said = handle_source(asset, None, "move", "archive/", "k" * 64)
    assert said.startswith("left in place: move applies to the client's own source storage")
