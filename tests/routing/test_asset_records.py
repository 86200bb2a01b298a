"""Asset records: from a sidecar JSON, a CSV/JSON manifest and a CMS entry; the prompt's subject comes from them."""

from __future__ import annotations

import json
import shutil

import pytest
from prefect.filesystems import LocalFileSystem

from brandforge.models import AssetRecord, AssetRef, InvalidInput, LoadedAsset
from brandforge.tasks.load import list_catalog
from brandforge.tasks.prompt import asset_subject, make_request
from tests.conftest import DEMO_CATALOG


@pytest.fixture
def catalog(tmp_path):
    folder = tmp_path / "catalog"
    folder.mkdir()
    for name in ("coffee-cup.jpg", "ceramic-mug.webp", "chelsea-cat.png"):
        shutil.copy(DEMO_CATALOG / name, folder / name)
    return folder


def listed(folder):
    return {a.name: a for a in list_catalog.fn(LocalFileSystem(basepath=str(folder)), "demo")}


def test_sidecar_and_manifest_fill_records_and_are_not_assets(catalog):
    (catalog / "manifest.csv").write_text(
        "file,title,category,tags,colors,locale,channel,priority\n"
        "coffee-cup.jpg,Morning Brew Cup,kitchen,mugs;breakfast,#112233,de-DE,print,low\n"
        "ceramic-mug.webp,Stoneware Mug,kitchen,,,,,\n")
    (catalog / "ceramic-mug.webp.json").write_text(json.dumps({"name": "Blue Stoneware Mug", "style": "illustration",
                                                               "seed": 7, "loras": [{"weights": "acme/brand-lora", "scale": 0.7}]}))
    assets = listed(catalog)
    assert sorted(assets) == ["ceramic-mug.webp", "chelsea-cat.png", "coffee-cup.jpg"]  # record files are not assets
    cup = assets["coffee-cup.jpg"].record
    assert (cup.name, cup.category, cup.tags, cup.colours, cup.locale, cup.channel, cup.priority) == (
        "Morning Brew Cup", "kitchen", ["mugs", "breakfast"], ["#112233"], "de-DE", "print", "low")
    mug = assets["ceramic-mug.webp"].record  # the sidecar over the manifest row
    assert mug.name == "Blue Stoneware Mug" and mug.category == "kitchen" and mug.style == "illustration"
    assert mug.seed == 7 and mug.loras[0].weights == "acme/brand-lora" and mug.loras[0].scale == 0.7
    assert assets["chelsea-cat.png"].record is None


def test_json_manifest_keyed_by_file(catalog):
    (catalog / "manifest.json").write_text(json.dumps({"chelsea-cat.png": {"product_title": "Cat Poster", "priority": "HIGH"}}))
    assert listed(catalog)["chelsea-cat.png"].record.model_dump(include={"name", "priority", "origin"}) == {
        "name": "Cat Poster", "priority": "high", "origin": "manifest"}


def test_a_bad_record_names_the_file_and_field(catalog):
    (catalog / "coffee-cup.jpg.json").write_text(json.dumps({"priority": "urgent"}))
    with pytest.raises(InvalidInput, match=r"asset record \(sidecar\): priority"):
        listed(catalog)
    (catalog / "coffee-cup.jpg.json").write_text("{not json")
    with pytest.raises(InvalidInput, match=r"sidecar coffee-cup.jpg.json: not valid JSON"):
        listed(catalog)


def test_cms_entry_becomes_the_record():
    """What the Strapi / WordPress trigger puts into the event's payload, as process_asset receives it."""
    ref = AssetRef(client="demo", uri="https://cms/u/mug.jpg", name="mug.jpg",
                   record={"event": "entry.create", "collection": "product", "id": 7, "title": "Red mug",
                           "category": "kitchen", "locale": "en", "tags": ["mugs", "red"]})
    assert ref.record == AssetRecord(name="Red mug", category="kitchen", locale="en", tags=["mugs", "red"], origin="cms")
    assert AssetRef(client="demo", uri="u", name="n", record={}).record is None  # the trigger's "no record"
    again = AssetRef.model_validate_json(ref.model_dump_json())  # through a flow run's parameters
    assert again.record == ref.record


def test_subject_from_record_name_else_file_name(demo_profile):
    asset = LoadedAsset(client="demo", uri="file:///c/red-sneaker_01.jpg", name="shoes/red-sneaker_01.jpg",
                        source_key="ab" * 32, path="/tmp/x.png", width=64, height=64, original_format="JPEG")
    assert asset_subject(asset) == "red sneaker"
    named = asset.model_copy(update={"record": AssetRecord(name="Trail Runner X")})
    assert asset_subject(named) == "Trail Runner X"
    assert "of Trail Runner X" in make_request(named, demo_profile.recipe("oil"), demo_profile).prompt
