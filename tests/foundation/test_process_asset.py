"""process_asset on its own, as the on-new-asset trigger runs it: just an AssetRef."""

from __future__ import annotations

import pytest
from prefect.filesystems import LocalFileSystem

from brandforge.blocks.ledger import Ledger
from brandforge.flows.process_asset import process_asset
from brandforge.models import AssetRef
from tests.conftest import DEMO_CATALOG

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_single_asset_by_reference(demo_profile, demo_state, monkeypatch):
    monkeypatch.chdir(demo_state)  # the default work folder is relative
    demo_profile.source = LocalFileSystem(basepath=str(DEMO_CATALOG))  # file:// sources are read only under it
    demo_profile.save("demo", overwrite=True)
    path = DEMO_CATALOG / "ceramic-mug.webp"
    outcome = process_asset(AssetRef(client="demo", uri=path.as_uri(), name=path.name))
    assert outcome.state == "published" and outcome.recipe == "poster"
    assert Ledger(url=demo_profile.ledger.url).published_for_generation("demo", demo_profile.target.target_key, outcome.generation_key)
    # As the on-new-asset deployment runs it: the final state says how the asset ended.
    state = process_asset(AssetRef(client="demo", uri=path.as_uri(), name=path.name), fail_run_on_failure=True,
                          return_state=True)
    assert state.is_completed() and state.message.startswith("demo: 1 skipped — ceramic-mug.webp: skipped")
    assert state.result().state == "skipped"


def test_unknown_client_is_recorded_not_lost(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default ledger lives in ./.brandforge
    path = DEMO_CATALOG / "ceramic-mug.webp"
    outcome = process_asset(AssetRef(client="ghost", uri=path.as_uri(), name=path.name))
    assert outcome.state == "failed" and outcome.reason.startswith("profile: unknown client 'ghost'")
    rows = Ledger(url=f"sqlite:///{tmp_path / '.brandforge' / 'ledger.db'}").entries(client="ghost")
    assert len(rows) == 1 and rows[0].source_uri == path.as_uri()


def test_an_event_run_whose_asset_failed_is_a_failed_run_that_says_why(tmp_path, monkeypatch):
    """The on-new-asset deployment sets fail_run_on_failure: no green run for a failed asset."""
    monkeypatch.chdir(tmp_path)
    path = DEMO_CATALOG / "ceramic-mug.webp"
    state = process_asset(AssetRef(client="ghost", uri=path.as_uri(), name=path.name), fail_run_on_failure=True,
                          return_state=True)
    assert state.is_failed()
    assert state.message.startswith("every asset failed — ghost: 1 failed — ceramic-mug.webp: failed: profile: unknown client")
    outcome = state.result(raise_on_failure=False)
    assert outcome.state == "failed" and outcome.reason.startswith("profile: unknown client 'ghost'")
