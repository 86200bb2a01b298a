"""The gates inside real Prefect runs (test harness server): best of N, quarantine, pause and review.

A catalog run with batch_size 4 publishes the best passing variant of one
asset and quarantines another whose variants all fail, with the reasons in the
ledger and the variants kept in the quarantine folder; a borderline asset
pauses its flow run for a GateReview and is published when a person approves
it, or falls back to the profile's default when nobody answers in time.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from brandforge.blocks.ledger import Ledger
from brandforge.flows.catalog_refresh import catalog_refresh
from brandforge.models import GateThresholds, StepSpec
from brandforge.tasks.gates.duplicates import phash
from tests.conftest import DEMO_CATALOG

pytestmark = pytest.mark.usefixtures("prefect_server")


def profile_for(demo_profile, client_id: str, batch_size: int, **gates):
    """The demo client with `batch_size` variants per recipe, a plain JPEG encode (post-processing is tested
    elsewhere) and these gate thresholds, saved under `client_id`."""
    encode_only = [StepSpec(step="encode", params={"format": "jpeg", "quality": 90})]
    # Outputs at the source's size (width/height unset), so a thumbnail stays too small to pass.
    recipes = [r.model_copy(update={"batch_size": batch_size, "chain": encode_only, "width": None, "height": None})
               for r in demo_profile.recipes]
    thresholds = demo_profile.gates.model_copy(update=gates)
    profile = demo_profile.model_copy(update={"client_id": client_id, "recipes": recipes, "gates": GateThresholds.model_validate(thresholds.model_dump())})
    profile.save(client_id, overwrite=True)
    return profile


def test_catalog_with_batch_of_4_publishes_the_best_and_quarantines_the_hopeless(demo_profile, demo_state, tmp_path):
    from prefect.artifacts import Artifact

    profile = profile_for(demo_profile, "gates-best-of-n", batch_size=4)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    shutil.copy(DEMO_CATALOG / "coffee-cup.jpg", catalog / "coffee-cup.jpg")
    # Too small for the profile's 256 px minimum: no variant can pass.
    with Image.open(DEMO_CATALOG / "rocket-launch.jpg") as im:
        im.convert("RGB").resize((200, 133)).save(catalog / "rocket-thumb.jpg", quality=92)

    summary = catalog_refresh(client=profile.client_id, source=str(catalog), work_dir=str(demo_state / "work"))
    assert summary.counts == {"published": 1, "quarantined": 1}

    rows = {Path(r.source_uri).name: r for r in Ledger(url=profile.ledger.url).entries(client=profile.client_id)}
    published, quarantined = rows["coffee-cup.jpg"], rows["rocket-thumb.jpg"]

    # Best of N: all four variants scored and recorded; the chosen one is the best that passed.
    assert published.state == "published" and published.params["batch_size"] == 4
    variants = {k: v for k, v in published.scores.items() if k.startswith("variant-")}
    assert len(variants) == 4 and all("sharpness" in v and "palette" in v for v in variants.values())
    passing = [int(k.split("-")[1]) for k, failed in published.scores["failed"].items() if not failed]
    chosen = published.scores["chosen"]
    assert chosen in passing
    # No aesthetic model in the demo profile: closest to the palette wins, sharpness breaks ties.
    best = max(passing, key=lambda i: (-variants[f"variant-{i}"]["palette"], variants[f"variant-{i}"]["sharpness"]))
    assert chosen == best
    with Image.open(published.output_uris[chosen]) as im:
        assert published.phash == phash(im)

    # Quarantine: every variant failed, each failed gate and score in the ledger, the files kept to look at.
    assert quarantined.state == "quarantined" and quarantined.phash is None
    for i in range(4):
        assert f"variant {i}: resolution 133.0" in quarantined.reason
    assert len(quarantined.output_uris) == 4 and all(Path(p).is_file() for p in quarantined.output_uris)
    folder = Path(quarantined.output_uris[0]).parent
    assert "quarantine" in folder.parts and (folder / "gates.json").is_file()

    report = Artifact.get("gates-best-of-n-catalog-gate-report")
    assert report is not None and "| resolution | 4 |" in report.data
    table = Artifact.get("gates-best-of-n-catalog-gate-scores")
    assert table is not None and "coffee-cup.jpg" in str(table.data)


def wait_for_paused_run(timeout: float = 90.0):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            if runs:
                return runs[0]
            time.sleep(0.5)
    raise AssertionError("no flow run paused for a review")


def run_in_thread(profile, catalog: Path, work: Path) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def target():
        try:
            result["summary"] = catalog_refresh(client=profile.client_id, source=str(catalog), work_dir=str(work))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def one_asset_catalog(tmp_path: Path) -> Path:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    shutil.copy(DEMO_CATALOG / "coffee-cup.jpg", catalog / "coffee-cup.jpg")
    return catalog


def test_borderline_asset_pauses_for_review_and_is_published_when_approved(demo_profile, demo_state, tmp_path):
    from prefect.flow_runs import resume_flow_run

    # Every variant's contrast is "near" its threshold with this band: nothing passes clearly, so a person decides.
    profile = profile_for(demo_profile, "gates-review", batch_size=2, review_band={"contrast": 1000.0}, review_timeout_s=120)
    thread, result = run_in_thread(profile, one_asset_catalog(tmp_path), demo_state / "work")

    paused = wait_for_paused_run()
    assert paused.name.endswith("coffee-cup.jpg")
    resume_flow_run(paused.id, run_input={"decision": "approve", "note": "fine for the spring campaign"})
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    assert result["summary"].counts == {"published": 1}

    row = Ledger(url=profile.ledger.url).entries(client=profile.client_id)[0]
    assert row.state == "published" and row.phash
    assert row.scores["review"] == {"decision": "approve", "note": "fine for the spring campaign"}


def test_unanswered_review_falls_back_to_the_profile_default(demo_profile, demo_state, tmp_path):
    profile = profile_for(demo_profile, "gates-review-timeout", batch_size=1, review_band={"contrast": 1000.0},
                          review_timeout_s=3, review_default="reject")
    summary = catalog_refresh(client=profile.client_id, source=str(one_asset_catalog(tmp_path)), work_dir=str(demo_state / "work"))
    assert summary.counts == {"quarantined": 1}
    row = Ledger(url=profile.ledger.url).entries(client=profile.client_id)[0]
    assert "rejected in review: no decision within 3 s" in row.reason
    assert row.scores["review"]["decision"] == "reject"


def test_an_asset_waiting_for_review_does_not_hold_up_the_catalog(demo_profile, demo_state, tmp_path):
    """Only the coffee cup is borderline (a rule gives it a review band): the two other assets are
    published and on record while its review run is still paused; the answer then publishes it."""
    from prefect.flow_runs import resume_flow_run

    from brandforge.models import RoutingRule

    profile = profile_for(demo_profile, "gates-review-queue", batch_size=1, review_timeout_s=120)
    profile = profile.model_copy(update={"routing": [
        RoutingRule(name="cup-reviewed", match="coffee-cup.jpg", gates={"review_band": {"contrast": 1000.0}}),
        *profile.routing]})
    profile.save(profile.client_id, overwrite=True)
    catalog = one_asset_catalog(tmp_path)
    for name in ("chelsea-cat.png", "rocket-launch.jpg"):
        shutil.copy(DEMO_CATALOG / name, catalog / name)
    thread, result = run_in_thread(profile, catalog, demo_state / "work")

    paused = wait_for_paused_run(timeout=300)
    assert paused.name.endswith("coffee-cup.jpg")
    rows = Ledger(url=profile.ledger.url).entries(client=profile.client_id)
    assert sorted(Path(r.source_uri).name for r in rows) == ["chelsea-cat.png", "rocket-launch.jpg"]  # done, not waiting
    assert thread.is_alive()  # the catalog waits only for the review's answer
    resume_flow_run(paused.id, run_input={"decision": "approve", "note": "ok"})
    thread.join(timeout=180)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    counts = result["summary"].counts
    assert sum(counts.values()) == 3 and "review" not in counts and counts.get("published", 0) >= 1
    cup = [r for r in Ledger(url=profile.ledger.url).entries(client=profile.client_id) if r.source_uri.endswith("coffee-cup.jpg")]
    assert len(cup) == 1 and cup[0].state == "published" and cup[0].scores["review"]["decision"] == "approve"
