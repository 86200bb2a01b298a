"""Source handling after a recorded publish, on local files (S3 is in test_s3.py)."""

from __future__ import annotations

import json

import pytest
from prefect.filesystems import LocalFileSystem

from brandforge.models import AssetRef, InvalidInput
from brandforge.tasks.archive import handle_local_source, handle_source
from tests.publish.conftest import make_image


def test_move_into_the_archive_folder_keeps_sub_folders_and_is_idempotent(tmp_path):
    catalog = tmp_path / "catalog"
    src = make_image(catalog / "mugs" / "red mug.jpg")
    storage = LocalFileSystem(basepath=str(catalog))
    done = handle_local_source(src.as_uri(), storage, "move", "archive/", "k" * 64, None)
    assert done == f"moved to {catalog / 'archive' / 'mugs' / 'red mug.jpg'}"
    assert not src.exists() and (catalog / "archive" / "mugs" / "red mug.jpg").exists()
    assert handle_local_source(src.as_uri(), storage, "move", "archive/", "k" * 64, None).startswith("already moved")
    archived = (catalog / "archive" / "mugs" / "red mug.jpg").as_uri()
    assert handle_local_source(archived, storage, "move", "archive/", "k" * 64, None).startswith("already in the archive")


def test_tag_writes_a_hidden_sidecar(tmp_path):
    src = make_image(tmp_path / "cup.jpg")
    handle_local_source(str(src), LocalFileSystem(basepath=str(tmp_path)), "tag", "archive/", "a" * 64, "http://127.0.0.1/?p=3")
    sidecar = json.loads((tmp_path / ".cup.jpg.brandforge.json").read_text())
    assert sidecar["generation_key"] == "a" * 64 and sidecar["published_url"] == "http://127.0.0.1/?p=3"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []  # no temporary file left


def test_unknown_mode_names_the_allowed_values(tmp_path):
    asset = AssetRef(client="demo", uri=(tmp_path / "x.jpg").as_uri(), name="x.jpg")
    with pytest.raises(InvalidInput, match="source_handling must be one of leave, tag, move"):
        handle_source.fn(asset, None, "delete", "archive/", "k" * 64)


def test_leave_touches_nothing(tmp_path):
    src = make_image(tmp_path / "x.jpg")
    asset = AssetRef(client="demo", uri=src.as_uri(), name="x.jpg")
    assert handle_source.fn(asset, None, "leave", "archive/", "k" * 64) == "left in place"
    assert [p.name for p in tmp_path.iterdir()] == ["x.jpg"]


def test_profile_field_is_validated(demo_profile):
    from pydantic import ValidationError

    from brandforge.blocks.client_profile import ClientProfile

    data = demo_profile.model_dump(exclude={"provider", "target", "ledger", "source", "aesthetic", "refiner", "c2pa_signer"})
    with pytest.raises(ValidationError, match="source_handling"):
        ClientProfile(**{**data, "source_handling": "delete"})


@pytest.mark.parametrize("prefix", ["", "/", "../out", "a/../../b"])
def test_archive_prefix_must_be_a_relative_folder(demo_profile, prefix):
    from pydantic import ValidationError

    from brandforge.blocks.client_profile import ClientProfile

    data = demo_profile.model_dump(exclude={"provider", "target", "ledger", "source", "aesthetic", "refiner", "c2pa_signer"})
    with pytest.raises(ValidationError, match="archive_prefix must be a relative folder"):
        ClientProfile(**{**data, "archive_prefix": prefix})
