"""A real Prefect run of catalog_refresh over the demo catalog (test harness server).

Asserts on the ledger, the gallery files, the metadata embedded in the outputs,
the run's artifacts, and on reruns: nothing is redone unless its source bytes
or its recipe changed. Bad files in the catalog end as recorded failures while
the rest of the catalog goes on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from decimal import Decimal
from PIL import Image

from brandforge.blocks.ledger import Ledger
from brandforge.flows.catalog_refresh import catalog_refresh
from brandforge.models import InvalidInput, Recipe, StepSpec
from brandforge.tasks.postprocess.encode import DIGITAL_SOURCE_TYPE, read_embedded_params
from tests.conftest import DEMO_CATALOG

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def catalog(tmp_path) -> Path:
    folder = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG, folder)
    return folder


def run(profile, catalog: Path, state: Path):
    profile.save(profile.client_id, overwrite=True)
    return catalog_refresh(client=profile.client_id, source=str(catalog), work_dir=str(state / "work"))


def test_demo_catalog_end_to_end(demo_profile, demo_state, catalog):
    summary = run(demo_profile, catalog, demo_state)
    assert summary.counts == {"published": 5}

    rows = Ledger(url=demo_profile.ledger.url).entries(client="demo")
    assert len(rows) == 5 and {r.state for r in rows} == {"published"}
    for row in rows:
        assert row.source_key and row.recipe_key and row.generation_key and row.seed is not None
        assert row.provider == "local" and row.job_ids and row.output_uris
        assert row.scores["chosen"] == 0 and "sharpness" in row.scores["variant-0"]
        assert row.params["prompt"] and row.timings["total"] > 0 and row.published_url

    # Routing: the mug went through the poster recipe, the cat through oil, the rest by rule or default.
    by_name = {Path(r.source_uri).name: r for r in rows}
    assert by_name["ceramic-mug.webp"].recipe == "poster"
    assert by_name["chelsea-cat.png"].recipe == "oil"
    assert by_name["rocket-launch.jpg"].recipe == "vintage"

    gallery = demo_state / "gallery"
    index = (gallery / "index.html").read_text()
    assert summary.gallery == str(gallery / "index.html")
    assert index.count("<article>") == 5 and "before" in index and "sharpness" in index
    files = sorted((gallery / "demo").glob("*.jpg"))
    published = [p for p in files if not p.stem.endswith(("-before", "-9x16", "-16x9"))]
    assert len(published) == 5 and len([p for p in files if p.stem.endswith("-before")]) == 5
    # The vintage recipe reframes: 1:1 is the main output, 9:16 and 16:9 ride along.
    extras = {p.stem.rsplit("-", 1)[-1]: Image.open(p).size for p in files if p.stem.startswith("rocket-launch") and p.stem.endswith(("9x16", "16x9"))}
    assert set(extras) == {"9x16", "16x9"}
    assert abs(extras["9x16"][0] / extras["9x16"][1] - 9 / 16) < 0.01 and abs(extras["16x9"][0] / extras["16x9"][1] - 16 / 9) < 0.01

    # Provenance travels inside the file.
    image = published[0]
    params = read_embedded_params(image)
    assert params["generation_key"] in {r.generation_key for r in rows}
    assert params["seed"] is not None and params["strength"] and [s["step"] for s in params["chain"]][-2:] == ["watermark", "encode"]
    with Image.open(image) as img:
        assert DIGITAL_SOURCE_TYPE.encode() in img.info["xmp"]


def test_artifacts_summarise_the_run(demo_profile, demo_state, catalog):
    from prefect.artifacts import Artifact

    run(demo_profile, catalog, demo_state)
    summary = Artifact.get("demo-catalog-summary")
    assert summary.type == "markdown" and "| published | 5 |" in summary.data
    table = Artifact.get("demo-catalog-assets")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert table.type == "table" and len(rows) == 5 and {r["state"] for r in rows} == {"published"}
    progress = Artifact.get("demo-catalog-progress")
    assert progress.type == "progress" and float(progress.data) == 100.0


def test_rerun_does_nothing_then_redoes_only_what_changed(demo_profile, demo_state, catalog):
    run(demo_profile, catalog, demo_state)
    jobs = demo_state / "jobs"
    jobs_before = set(jobs.iterdir())

    second = run(demo_profile, catalog, demo_state)
    assert second.counts == {"skipped": 5}
    assert all(o.reason == "already published" for o in second.outcomes)
    assert set(jobs.iterdir()) == jobs_before  # no generation
    assert len(Ledger(url=demo_profile.ledger.url).entries(client="demo")) == 5  # no new rows, no publish

    # One source changes: only it is redone.
    with Image.open(catalog / "coffee-cup.jpg") as img:
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(catalog / "coffee-cup.jpg", quality=90)
    third = run(demo_profile, catalog, demo_state)
    assert third.counts == {"published": 1, "skipped": 4}
    assert [o.name for o in third.outcomes if o.state == "published"] == ["coffee-cup.jpg"]

    # One recipe changes: only the assets routed to it are redone.
    demo_profile.recipes = [r if r.name != "oil" else r.model_copy(update={"strength": 0.5}) for r in demo_profile.recipes]
    fourth = run(demo_profile, catalog, demo_state)
    assert [o.name for o in fourth.outcomes if o.state == "published"] == ["chelsea-cat.png"]
    assert fourth.counts == {"published": 1, "skipped": 4}


def test_bad_files_fail_alone_with_reasons(demo_profile, demo_state, catalog):
    (catalog / "empty.jpg").write_bytes(b"")
    (catalog / "notes.txt").write_text("not a picture")
    data = (catalog / "coffee-cup.jpg").read_bytes()
    (catalog / "truncated.jpg").write_bytes(data[: len(data) // 3])
    summary = run(demo_profile, catalog, demo_state)
    assert summary.counts == {"published": 5, "failed": 3}
    reasons = {o.name: o.reason for o in summary.outcomes if o.state == "failed"}
    assert reasons["empty.jpg"].startswith("load: empty file")
    assert reasons["notes.txt"].startswith("load: not an image")
    assert reasons["truncated.jpg"].startswith("load: corrupt or truncated JPEG")
    failed_rows = Ledger(url=demo_profile.ledger.url).entries(client="demo", state="failed")
    assert {Path(r.source_uri).name for r in failed_rows} == set(reasons)

    # A failed asset is tried again on the next run (failure is not a final decision).
    again = run(demo_profile, catalog, demo_state)
    assert again.counts == {"skipped": 5, "failed": 3}


def test_unknown_client_is_a_clear_error_before_the_run():
    with pytest.raises(InvalidInput, match="unknown client 'nobody'"):
        catalog_refresh(client="nobody", source=str(DEMO_CATALOG))


def test_bad_recipe_parameter_fails_before_any_image(demo_profile, demo_state, catalog):
    demo_profile.recipes[0] = demo_profile.recipes[0].model_copy(update={"strength": 3.0})
    with pytest.raises(InvalidInput, match="recipe 'poster': strength must be between 0.01 and 1.0"):
        run(demo_profile, catalog, demo_state)
    assert not (demo_state / "work").exists()


def test_unknown_chain_step_fails_before_any_image(demo_profile, demo_state, catalog):
    demo_profile.recipes[1] = Recipe(name="watercolour", chain=[StepSpec(step="sparkle")])
    with pytest.raises(InvalidInput, match="unknown step 'sparkle'; allowed:"):
        run(demo_profile, catalog, demo_state)
    assert not (demo_state / "work").exists()


def test_bad_step_parameter_names_the_field(demo_profile, demo_state, catalog):
    demo_profile.recipes[1] = Recipe(name="watercolour", chain=[StepSpec(step="watermark", params={"anchor": "middle"})])
    with pytest.raises(InvalidInput, match="anchor"):
        run(demo_profile, catalog, demo_state)


def test_budget_stops_paying_and_records_why(demo_profile, demo_state, catalog):
    demo_profile.provider = demo_profile.provider.model_copy(update={"price_per_image_usd": 0.05})
    # The demo routes its space portraits to a second provider: it costs the same here.
    demo_profile.providers = {k: v.model_copy(update={"price_per_image_usd": 0.05}) for k, v in demo_profile.providers.items()}
    demo_profile.run_budget_usd = 0.12
    summary = run(demo_profile, catalog, demo_state)
    assert summary.counts == {"published": 2, "failed": 3}
    assert summary.cost_usd == pytest.approx(0.10)
    reasons = [o.reason for o in summary.outcomes if o.state == "failed"]
    assert all(r.startswith("budget: run budget exhausted: $0.10 of $0.12 spent") for r in reasons)
    assert Ledger(url=demo_profile.ledger.url).spent("demo") == Decimal("0.1")  # the job journal: what was paid, exactly
