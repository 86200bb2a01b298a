"""Asset records from an S3 source object's tags and user metadata (moto's server on 127.0.0.1)."""

from __future__ import annotations

import json

from brandforge.tasks.load import list_catalog, load_asset
from brandforge.tasks.prompt import asset_subject, make_request
from brandforge.tasks.route import route_for
from tests.conftest import DEMO_CATALOG
from tests.routing.test_routing import with_rules


def test_object_tags_and_metadata_become_the_record(s3_bucket_block, demo_profile, tmp_path):
    s3 = s3_bucket_block.credentials.get_s3_client()
    bucket = s3_bucket_block.bucket_name
    body = (DEMO_CATALOG / "ceramic-mug.webp").read_bytes()
    s3.put_object(Bucket=bucket, Key="products/mug-0042.webp", Body=body,
                  Metadata={"product-name": "Blue Stoneware Mug", "locale": "de-DE", "category": "kitchen"},
                  Tagging="category=mugs&priority=low&brandforge-published=abc123")
    s3.put_object(Bucket=bucket, Key="products/plain-cup.webp", Body=body)
    s3.put_object(Bucket=bucket, Key="products/sidecar-cup.webp", Body=body, Tagging="category=mugs&channel=print")
    s3.put_object(Bucket=bucket, Key="products/sidecar-cup.webp.json", Body=json.dumps({"name": "Editor's Cup"}).encode())
    storage = s3_bucket_block.model_copy(update={"bucket_folder": "products"})
    refs = {r.name: r for r in list_catalog.fn(storage, "demo")}
    assert sorted(refs) == ["mug-0042.webp", "plain-cup.webp", "sidecar-cup.webp"]

    mug = load_asset.fn(refs["mug-0042.webp"], storage, str(tmp_path / "work"))
    record = mug.record
    assert (record.name, record.category, record.priority, record.locale, record.origin) == (
        "Blue Stoneware Mug", "mugs", "low", "de-DE", "s3")  # the tag wins over metadata of the same name
    assert asset_subject(mug) == "Blue Stoneware Mug"  # the prompt's subject: the record's name, not the key
    assert "Blue Stoneware Mug" in make_request(mug, demo_profile.recipe("oil"), demo_profile).prompt
    profile = with_rules(demo_profile, [{"name": "mugs", "when": {"category": "mugs"}, "recipe": "poster"}])
    assert route_for(mug.name, profile, mug.record).rule == "mugs"

    assert load_asset.fn(refs["plain-cup.webp"], storage, str(tmp_path / "work")).record is None
    assert asset_subject(load_asset.fn(refs["plain-cup.webp"], storage, str(tmp_path / "work"))) == "plain cup"
    side = load_asset.fn(refs["sidecar-cup.webp"], storage, str(tmp_path / "work")).record
    assert (side.name, side.category, side.channel) == ("Editor's Cup", "mugs", "print")  # the sidecar over the tags
