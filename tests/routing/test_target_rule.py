"""A routing rule that overrides the publish target: channel `print` → the profile's named target `print-s3`."""

from __future__ import annotations

import shutil

import pytest
from pydantic import ValidationError

from brandforge.blocks.ledger import Ledger
from brandforge.blocks.targets.s3 import S3Target
from brandforge.flows.process_asset import process_asset
from brandforge.models import AssetRecord, AssetRef
from tests.conftest import DEMO_CATALOG
from tests.routing.test_routing import with_rules

PRINT_RULE = {"name": "print", "when": {"channel": "print"}, "target": "print-s3"}


def test_an_unknown_target_is_an_error_naming_the_rule(demo_profile):
    with pytest.raises(ValidationError, match=r"routing rule print: names target 'print-s3'; the profile's targets: \['default'\]"):
        with_rules(demo_profile, [PRINT_RULE])
    with pytest.raises(ValidationError, match="targets may not be named 'default'"):
        with_rules(demo_profile, [], targets={"default": demo_profile.target})


@pytest.mark.usefixtures("prefect_server")
def test_the_asset_publishes_to_the_rules_target(demo_profile, demo_state, s3_bucket_block, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    shutil.copy(DEMO_CATALOG / "rocket-launch.jpg", catalog / "rocket-launch.jpg")
    shutil.copy(DEMO_CATALOG / "coffee-cup.jpg", catalog / "coffee-cup.jpg")
    profile = with_rules(demo_profile, [PRINT_RULE], targets={"print-s3": S3Target(bucket=s3_bucket_block)})
    run = lambda name, record=None: process_asset(  # noqa: E731
        AssetRef(client="demo", uri=(catalog / name).as_uri(), name=name, record=record), profile=profile,
        source_folder=str(catalog), work_dir=str(demo_state / "work"))

    printed = run("rocket-launch.jpg", AssetRecord(channel="print"))
    assert printed.state == "published"
    listed = s3_bucket_block.credentials.get_s3_client().list_objects_v2(Bucket=s3_bucket_block.bucket_name)
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert len(keys) == 1 and printed.generation_key[:12] in keys[0]
    ledger = Ledger(url=profile.ledger.url)
    row = ledger.published_for_generation("demo", profile.targets["print-s3"].target_key, printed.generation_key)
    assert row and row.published_url.startswith(f"s3://{s3_bucket_block.bucket_name}/") and row.params["target_ref"] == "print-s3"
    # The replay record names the routed target, not the profile's own.
    assert row.recipe_snapshot.target.startswith(profile.targets["print-s3"].target_name + " "), row.recipe_snapshot.target
    assert profile.targets["print-s3"].target_name != profile.target.target_name

    web = run("coffee-cup.jpg")  # no print channel: the profile's own target (the gallery)
    assert web.state == "published"
    assert ledger.published_for_generation("demo", profile.target.target_key, web.generation_key)
    assert len(s3_bucket_block.credentials.get_s3_client().list_objects_v2(Bucket=s3_bucket_block.bucket_name)["Contents"]) == 1


def test_explain_names_the_routed_target(demo_profile, s3_bucket_block, tmp_path):
    import json

    from prefect.filesystems import LocalFileSystem

    from brandforge.tasks.explain import explain

    catalog = tmp_path / "catalog"
    catalog.mkdir()
    shutil.copy(DEMO_CATALOG / "rocket-launch.jpg", catalog / "rocket-launch.jpg")
    (catalog / "rocket-launch.jpg.json").write_text(json.dumps({"channel": "print"}))
    profile = with_rules(demo_profile, [PRINT_RULE], targets={"print-s3": S3Target(bucket=s3_bucket_block)})
    text = explain("rocket-launch.jpg", profile, storage=LocalFileSystem(basepath=str(catalog)))
    assert "decided   rule print" in text and "target    print-s3 → s3" in text
