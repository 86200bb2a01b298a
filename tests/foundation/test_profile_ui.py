"""A client profile edited in the Prefect UI comes back as the same profile.

The UI's block edit page (Prefect 3.8, ui-v2 `block-document-edit-page`) loads
`GET /block_documents/{id}` (secrets masked, saved nested blocks inlined), lets a
person change fields, and sends `PATCH /block_documents/{id}` with
`{"data": <all the form's values>, "merge_existing_data": false}`. A nested block
left alone goes back as the data it was shown; one chosen in the block picker goes
back as `{"$ref": {"block_document_id": …}}`. These tests send exactly that to a
real Prefect server and load the profile again.
"""

from __future__ import annotations

import copy
from abc import ABC
from pathlib import Path

import httpx
import pytest
from prefect.blocks.core import InvalidBlockRegistration
from prefect.filesystems import LocalFileSystem
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr

from brandforge.blocks.client_profile import ClientProfile
from brandforge.blocks.ledger import Ledger
from brandforge.blocks.providers.base import ImageProvider, ImageRefiner
from brandforge.blocks.providers.hosted import HostedProvider, SynchronousProvider
from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.blocks.targets.base import PublishTarget
from brandforge.models import InvalidInput

ABSTRACT = [ImageProvider, ImageRefiner, PublishTarget, HostedProvider, SynchronousProvider]


def comparable(profile: ClientProfile) -> dict:
    """Everything a profile holds, secrets included, without Prefect's document ids."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.startswith("_block_document") and k != "_is_anonymous"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(profile.model_dump(mode="json", context={"include_secrets": True}))


def api() -> httpx.Client:
    return httpx.Client(base_url=PREFECT_API_URL.value(), timeout=30)


def read_document(name: str) -> dict:
    """What the UI's edit page loads (no secrets: they come masked)."""
    with api() as client:
        response = client.get(f"/block_types/slug/{ClientProfile.get_block_type_slug()}/block_documents/name/{name}")
        response.raise_for_status()
        return response.json()


def write_back(doc: dict, data: dict) -> None:
    """What the UI's Save button sends."""
    with api() as client:
        client.patch(f"/block_documents/{doc['id']}", json={"data": data, "merge_existing_data": False}).raise_for_status()


def rich_profile(demo_profile: ClientProfile, tmp_path: Path) -> ClientProfile:
    return demo_profile.model_copy(update={
        "source": LocalFileSystem(basepath=str(tmp_path / "catalog")),
        "webhook_token": SecretStr("hook-token-1"),
        "ledger": Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}", password="ledger-pw"),
    })


def test_abstract_bases_are_not_block_types():
    for base in ABSTRACT:
        assert ABC in base.__bases__, base
        with pytest.raises(InvalidBlockRegistration):
            base.register_type_and_schema()


def test_nested_blocks_are_offered_as_concrete_types():
    schema = ClientProfile.model_json_schema()
    definitions = schema["definitions"]

    def slugs(field: str) -> set[str]:
        refs = [a["$ref"].split("/")[-1] for a in schema["properties"][field]["anyOf"] if "$ref" in a]
        return {definitions[r]["block_type_slug"] for r in refs}

    assert {"brandforge-local-engine", "brandforge-replicate", "brandforge-fal", "brandforge-stability",
            "brandforge-openai-images", "brandforge-leonardo", "brandforge-diffusers"} == slugs("provider")
    assert {"brandforge-local-gallery", "brandforge-wordpress-site", "brandforge-strapi-site", "brandforge-s3-target"} == slugs("target")
    assert definitions[schema["properties"]["ledger"]["$ref"].split("/")[-1]]["block_type_slug"] == "brandforge-ledger"
    assert "ledger" in schema["required"]
    for optional in ("source", "refiner", "aesthetic", "c2pa_signer"):
        prop = schema["properties"][optional]
        assert prop["default"] is None and {"type": "null"} in prop["anyOf"], optional
    abstract_slugs = {b.get_block_type_slug() for b in ABSTRACT}
    assert not abstract_slugs & {d.get("block_type_slug") for d in definitions.values()}


def test_an_empty_optional_block_is_none(demo_profile):
    data = demo_profile.model_dump(context={"include_secrets": True})
    loaded = ClientProfile.model_validate({**data, "refiner": {}, "aesthetic": {}, "c2pa_signer": {}, "source": {}})
    assert loaded.refiner is None and loaded.aesthetic is None and loaded.c2pa_signer is None and loaded.source is None


def test_a_one_field_edit_in_the_ui_keeps_the_profile(prefect_server, demo_profile, tmp_path):
    from brandforge.tasks.profiles import load_profile

    profile = rich_profile(demo_profile, tmp_path)
    profile.save("demo", overwrite=True)
    doc = read_document("demo")
    assert doc["data"]["webhook_token"] != "hook-token-1"  # the form shows it masked

    data = copy.deepcopy(doc["data"])
    data["display_name"] = "Demo Company"
    write_back(doc, data)

    loaded = load_profile("demo")
    assert loaded.display_name == "Demo Company"
    expected = comparable(profile)
    expected["display_name"] = "Demo Company"
    assert comparable(loaded) == expected
    assert loaded.webhook_token.get_secret_value() == "hook-token-1"
    assert loaded.ledger.password.get_secret_value() == "ledger-pw"
    assert loaded.refiner is None and loaded.c2pa_signer is None and loaded.aesthetic is None


def test_a_block_chosen_in_the_picker_round_trips(prefect_server, demo_profile, tmp_path):
    from brandforge.tasks.profiles import load_profile

    replicate = ReplicateProvider(api_key="r8_picker_secret", model="acme/img2img", price_per_image_usd=0.02)
    replicate.save("picker-replicate", overwrite=True)
    profile = rich_profile(demo_profile, tmp_path).model_copy(update={"client_id": "picker"})
    profile.save("picker", overwrite=True)
    doc = read_document("picker")

    data = copy.deepcopy(doc["data"])
    data["provider"] = {"$ref": {"block_document_id": str(replicate._block_document_id)}}
    data["display_name"] = "Picked"
    write_back(doc, data)

    loaded = load_profile("picker")
    assert type(loaded.provider) is ReplicateProvider
    assert loaded.provider.api_key.get_secret_value() == "r8_picker_secret"
    assert loaded.provider._block_document_name == "picker-replicate"  # the tenancy check sees the block's name
    assert loaded.display_name == "Picked" and comparable(loaded)["ledger"] == comparable(profile)["ledger"]

    # Saved again from the page that now shows it (inlined, secret masked): the masked secret is refused by name.
    doc = read_document("picker")
    write_back(doc, copy.deepcopy(doc["data"]))
    with pytest.raises(InvalidInput, match=r"provider\.api_key holds the masked value"):
        load_profile("picker")


def test_a_profile_without_its_ledger_is_an_error(prefect_server, demo_profile, tmp_path):
    from brandforge.tasks.profiles import load_profile

    rich_profile(demo_profile, tmp_path).model_copy(update={"client_id": "noledger"}).save("noledger", overwrite=True)
    doc = read_document("noledger")
    for broken in ({k: v for k, v in doc["data"].items() if k != "ledger"}, {**doc["data"], "ledger": None}):
        write_back(doc, broken)
        with pytest.raises(InvalidInput, match="ledger"):
            load_profile("noledger")


def test_a_profile_that_no_longer_validates_names_the_field(prefect_server, demo_profile, tmp_path):
    from brandforge.tasks.profiles import load_profile

    rich_profile(demo_profile, tmp_path).model_copy(update={"client_id": "badpal"}).save("badpal", overwrite=True)
    doc = read_document("badpal")
    write_back(doc, {**doc["data"], "palette": ["red"]})
    with pytest.raises(InvalidInput, match="palette colours must be #rrggbb"):
        load_profile("badpal")


def test_an_s3_profile_keeps_its_nested_credentials_through_a_ui_edit(prefect_server, demo_profile, tmp_path):
    """S3 source and S3 target (prefect-aws S3Bucket twice in one schema): saved, edited, loaded."""
    from prefect_aws import AwsCredentials, S3Bucket

    from brandforge.blocks.targets.s3 import S3Target
    from brandforge.tasks.profiles import load_profile

    creds = AwsCredentials(aws_access_key_id="AKIATEST", aws_secret_access_key="s3-secret-key")
    profile = rich_profile(demo_profile, tmp_path).model_copy(update={
        "client_id": "s3ui", "source": S3Bucket(bucket_name="in", credentials=creds),
        "target": S3Target(bucket=S3Bucket(bucket_name="out", credentials=creds))})
    profile.save("s3ui", overwrite=True)
    doc = read_document("s3ui")
    assert doc["data"]["target"]["bucket"]["credentials"]["aws_secret_access_key"] != "s3-secret-key"
    write_back(doc, {**copy.deepcopy(doc["data"]), "display_name": "S3 UI"})

    loaded = load_profile("s3ui")
    expected = {**comparable(profile), "display_name": "S3 UI"}
    assert comparable(loaded) == expected
    assert type(loaded.target) is S3Target and loaded.target.bucket.credentials.aws_secret_access_key.get_secret_value() == "s3-secret-key"
