"""A catalog run in which assets failed does not look like a clean success (real Prefect runs)."""

from __future__ import annotations

import time

import pytest

from brandforge.flows.catalog_refresh import catalog_refresh, final_state
from brandforge.models import CATALOG_DEGRADED_EVENT, AssetOutcome, CatalogSummary

pytestmark = pytest.mark.usefixtures("prefect_server")


def outcome(name: str, state: str) -> AssetOutcome:
    return AssetOutcome(client="demo", source_uri=f"file:///c/{name}", name=name, state=state, reason="load: empty file")


def summary(*states: str) -> CatalogSummary:
    outcomes = [outcome(f"{i}.jpg", s) for i, s in enumerate(states)]
    counts: dict[str, int] = {}
    for s in states:
        counts[s] = counts.get(s, 0) + 1
    return CatalogSummary(client="demo", counts=counts, outcomes=outcomes, seconds=1.0, cost_usd=0.0)


def test_states_and_messages():
    clean = final_state(summary("published", "skipped"))
    assert clean.is_completed() and clean.message == "demo: 1 published, 1 skipped"
    partial = final_state(summary("published", "failed"))
    assert partial.is_completed() and partial.message == "demo: 1 published, 1 failed (1 need attention)"
    total = final_state(summary("failed", "failed"))
    assert total.is_failed() and total.message == "every asset failed — demo: 2 failed"


def degraded_events(client) -> list[dict]:
    resp = client._client.post("/events/filter", json={"filter": {"event": {"name": [CATALOG_DEGRADED_EVENT]}}, "limit": 50})
    return resp.json().get("events", [])


def test_a_run_where_every_asset_failed_is_failed_and_announced(demo_profile, demo_state, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    catalog = tmp_path / "bad"
    catalog.mkdir()
    (catalog / "empty.jpg").write_bytes(b"")
    (catalog / "notes.jpg").write_text("not an image")
    demo_profile.save("demo", overwrite=True)
    state = catalog_refresh(client="demo", source=str(catalog), work_dir=str(demo_state / "work"), return_state=True)
    assert state.is_failed() and state.message == "every asset failed — demo: 2 failed"
    assert state.result(raise_on_failure=False).counts == {"failed": 2}  # the summary is still the result
    EventsWorker.drain_all(timeout=10)
    found: list[dict] = []
    with get_client(sync_client=True) as client:
        for _ in range(30):  # the server persists events on a short cycle
            found = [e for e in degraded_events(client) if e["payload"].get("flow_run_id") == str(state.state_details.flow_run_id)]
            if found:
                break
            time.sleep(0.5)
    assert found and found[0]["payload"]["counts"] == {"failed": 2}
    assert sorted(found[0]["payload"]["failed"]) == ["empty.jpg", "notes.jpg"]
