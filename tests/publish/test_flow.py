"""process_asset publishing to the real WordPress inside a real Prefect run.

The rerun case (ledger kept, and ledger lost) and the crash between upload and
post are asserted by querying WordPress itself; failures end as
`failed: publish: <reason>` with the source left where it was.
"""

from __future__ import annotations

import shutil

import pytest
from prefect.filesystems import LocalFileSystem

from brandforge.blocks.ledger import Ledger
from brandforge.models import AssetRef
from tests.conftest import DEMO_CATALOG
from tests.publish.conftest import Fault

pytestmark = pytest.mark.usefixtures("prefect_server")


def _catalog(tmp_path, name="coffee-cup.jpg"):
    catalog = tmp_path / "catalog"
    catalog.mkdir(exist_ok=True)
    shutil.copy(DEMO_CATALOG / name, catalog / name)
    return catalog, AssetRef(client="demo", uri=(catalog / name).as_uri(), name=name)


def _run(profile, asset, catalog, state):
    from brandforge.flows.process_asset import process_asset

    return process_asset(asset, profile=profile, source_folder=str(catalog), work_dir=str(state / "work"))


def test_publish_record_archive_then_rerun_creates_nothing(wordpress, demo_profile, demo_state, tmp_path):
    catalog, asset = _catalog(tmp_path)
    profile = demo_profile.model_copy(update={"target": wordpress.site(), "source_handling": "move"})

    first = _run(profile, asset, catalog, demo_state)

    assert first.state == "published", first.reason
    assert wordpress.count("posts", first.output_key) == 1 and wordpress.count("media", first.output_key) == 1
    [row] = Ledger(url=profile.ledger.url).entries(state="published")
    assert row.target == "wordpress" and row.published_url == first.published_url
    assert row.remote_ids["post_id"] and row.remote_ids["media_url"].startswith(wordpress.url)
    assert row.source_uri == asset.uri and row.job_ids and row.params and row.scores
    # Moved only after the row was recorded.
    assert not (catalog / asset.name).exists() and (catalog / "archive" / asset.name).exists()

    # Rerun on the archived file with the ledger kept: nothing to do.
    archived = AssetRef(client="demo", uri=(catalog / "archive" / asset.name).as_uri(), name=asset.name)
    assert _run(profile, archived, catalog, demo_state).state == "skipped"

    # Rerun with the ledger lost (another machine, a wiped disk): WordPress itself says it is there.
    fresh = profile.model_copy(update={"ledger": Ledger(url=f"sqlite:///{tmp_path / 'fresh.db'}")})
    again = _run(fresh, archived, catalog, demo_state)
    assert again.state == "published" and again.published_url == first.published_url
    assert wordpress.count("posts", first.output_key) == 1 and wordpress.count("media", first.output_key) == 1
    assert (catalog / "archive" / asset.name).exists() and not (catalog / "archive" / "archive").exists()


def test_crash_between_upload_and_post_then_rerun(wordpress, wp_proxy, demo_profile, demo_state, tmp_path):
    catalog, asset = _catalog(tmp_path, "rocket-launch.jpg")
    # A refusal no retry can fix, on the post only: the media is already uploaded.
    wp_proxy.faults.append(Fault("POST", "/wp/v2/posts", 400))
    broken = demo_profile.model_copy(update={"target": wordpress.site(url=wp_proxy.url), "source_handling": "move"})

    crashed = _run(broken, asset, catalog, demo_state)

    assert crashed.state == "failed" and crashed.reason.startswith("publish: WordPress answered 400")
    assert (catalog / asset.name).exists()  # not archived: nothing was published
    assert wordpress.count("media", crashed.output_key) == 1 and wordpress.count("posts", crashed.output_key) == 0

    healed = _run(broken.model_copy(update={"target": wordpress.site()}), asset, catalog, demo_state)

    assert healed.state == "published", healed.reason
    row = Ledger(url=broken.ledger.url).published_for_generation("demo", wordpress.site().target_key, healed.output_key)
    assert row.remote_ids["media_reused"] is True
    assert wordpress.count("media", healed.output_key) == 1 and wordpress.count("posts", healed.output_key) == 1
    assert (catalog / "archive" / asset.name).exists()


def test_wrong_credentials_fail_once_recorded_and_source_kept(wordpress, wp_proxy, demo_profile, demo_state, tmp_path):
    catalog, asset = _catalog(tmp_path, "ceramic-mug.webp")
    site = wordpress.site(url=wp_proxy.url, application_password="not the password")
    profile = demo_profile.model_copy(update={"target": site, "source_handling": "move"})

    outcome = _run(profile, asset, catalog, demo_state)

    assert outcome.state == "failed"
    assert outcome.reason.startswith("publish: WordPress at") and "did not accept the application password" in outcome.reason
    assert "not the password" not in outcome.reason
    assert wp_proxy.seen == [("GET", "/brandforge/v1/status", 200)]  # not retried: a retry cannot help
    [row] = Ledger(url=profile.ledger.url).entries()
    assert row.state == "failed" and row.reason == outcome.reason
    assert (catalog / asset.name).exists() and not (catalog / "archive").exists()


def test_transient_errors_are_retried_and_publish_once(wordpress, wp_proxy, demo_profile, demo_state, tmp_path):
    catalog, asset = _catalog(tmp_path, "chelsea-cat.png")
    wp_proxy.faults.append(Fault("POST", "/wp/v2/media", 503))
    profile = demo_profile.model_copy(update={"target": wordpress.site(url=wp_proxy.url)})

    outcome = _run(profile, asset, catalog, demo_state)

    assert outcome.state == "published", outcome.reason
    assert [s for s in wp_proxy.seen if s[0] == "POST"] == [
        ("POST", "/wp/v2/media", 503), ("POST", "/wp/v2/media", 201), ("POST", "/wp/v2/posts", 201),
    ]
    assert wordpress.count("media", outcome.output_key) == 1 and wordpress.count("posts", outcome.output_key) == 1
    assert (catalog / asset.name).exists()  # source_handling 'leave' (the default)
