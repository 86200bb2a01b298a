"""`brandforge replay`: a published demo image rebuilt from its ledger row alone, to identical bytes.

The demo catalog (two of its assets, local engine, 512 px) runs once; then replay by ledger row id,
by generation key and by published URL takes the generation from the store (0 provider calls); with
the generation gone from the store it is refused without --allow-provider-call and, with it, the
local engine renders again to the same bytes; a changed logo is reported. The ledger row's recipe
snapshot holds the values that decided each image; fal's reported seed reaches it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from brandforge.blocks.ledger import Ledger
from brandforge.blocks.providers.local_engine import LocalEngine
from brandforge.deployments.cli import run_command
from brandforge.deployments.demo import PALETTE, demo_profile
from brandforge.flows.catalog_refresh import run_catalog
from brandforge.models import AssetPlan, AssetRef, GenerationResult, LedgerEntry, Recipe, content_hash
from brandforge.tasks.generation_store import GenerationStore
from brandforge.tasks.ledger import ledger_entry
from brandforge.tasks.snapshot import recipe_snapshot
from tests.conftest import DEMO_CATALOG

CLIENT = "replay"
ASSETS = ("coffee-cup.jpg", "astronaut-portrait.png")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, prefect_server):
    """The demo profile (its logo a copy the tests may change) over two demo assets, published to the gallery."""
    root = tmp_path_factory.mktemp("replay")
    catalog = root / "catalog"
    catalog.mkdir()
    for name in (*ASSETS, "manifest.csv"):
        shutil.copy(DEMO_CATALOG / name, catalog / name)
    logo = root / "logo.png"
    shutil.copy(DEMO_CATALOG.parent / "logo.png", logo)
    state = root / "state"
    profile = demo_profile(state, client_id=CLIENT, catalog=catalog)
    profile.logo_path = str(logo)
    profile.save(CLIENT, overwrite=True)
    summary = run_catalog(CLIENT, source=str(catalog), work_dir=str(state / "work"))
    assert summary.counts == {"published": 2}
    ledger = Ledger(url=profile.ledger.url)
    rows = {Path(e.source_uri).name: (i, e) for i, e in ledger.rows(client=CLIENT)}
    return {"root": root, "state": state, "logo": logo, "ledger": ledger, "rows": rows}


@pytest.fixture
def submits(monkeypatch):
    """Every LocalEngine.submit (a provider call), counted."""
    calls: list[str] = []
    original = LocalEngine.submit

    async def counted(self, request):
        calls.append(request.prompt)
        return await original(self, request)

    monkeypatch.setattr(LocalEngine, "submit", counted)
    return calls


def replay(demo_run, ref: str, *extra: str) -> int:
    return run_command(["replay", ref, "--client", CLIENT, "--ledger", demo_run["ledger"].url,
                        "--out", str(demo_run["root"] / "replays"), *extra])


def test_the_ledger_row_records_what_decided_the_image(demo_run):
    _, row = demo_run["rows"]["astronaut-portrait.png"]
    snap = row.recipe_snapshot
    assert snap is not None
    assert snap.template == "space@1" and snap.prompt == row.params["prompt"] and snap.prompt.startswith("pencil sketch of Astronaut")
    assert snap.provider.ref == "studio" and snap.provider.name == "local" and snap.provider.block_type == "brandforge-local-engine"
    assert snap.provider.model == "brandforge-local-v1-studio" and snap.provider.settings["palette"] == ["#1d1d1f", "#f5f5f7", "#b08d57"]
    assert snap.request.seed == row.seed and snap.request.strength == 0.9 and snap.request.prompt == snap.prompt
    assert [s.step for s in snap.chain] == ["grade", "watermark", "encode"]
    assert snap.chain[1].params == {"anchor": "bottom-left", "scale": 0.2, "opacity": 0.9}
    assert snap.encode["format"] == "jpeg" and snap.encode["quality"] == 90 and snap.encode["subsampling"] == "4:2:0"
    assert snap.palette == PALETTE and snap.recipe == "sketch"
    assert snap.logo.path == str(demo_run["logo"]) and snap.logo.sha256 == content_hash(demo_run["logo"].read_bytes())
    assert snap.target.startswith("gallery") and snap.generation_store and Path(snap.generation_store).is_dir()
    assert snap.reported_seed is None  # the local engine reports no seed of its own


def test_audit_shows_what_the_keys_stood_for(demo_run, capsys):
    row_id, row = demo_run["rows"]["astronaut-portrait.png"]
    assert run_command(["audit", str(row_id), "--client", CLIENT, "--ledger", demo_run["ledger"].url]) == 0
    out = capsys.readouterr().out
    assert "  template         space@1" in out
    assert "  provider block   studio → brandforge-local-engine, model brandforge-local-v1-studio" in out
    assert f"  logo             {demo_run['logo']} (sha256 {row.recipe_snapshot.logo.sha256})" in out


def test_replay_by_row_id_generation_key_and_published_url_gives_identical_bytes(demo_run, submits, capsys):
    row_id, row = demo_run["rows"]["coffee-cup.jpg"]
    for ref in (str(row_id), row.generation_key, row.generation_key[:12], row.published_url):
        assert replay(demo_run, ref) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        assert f"replay    ledger row {row_id}" in out and "result    identical bytes" in out
        assert "pixels    from the generation store (no provider call, $0)" in out
        assert f"published {row.published_url}" in out
    assert submits == []  # not one provider call


def test_without_the_stored_generation_replay_needs_the_flag_then_regenerates(demo_run, submits, capsys):
    row_id, row = demo_run["rows"]["astronaut-portrait.png"]
    store = GenerationStore(row.recipe_snapshot.generation_store)
    shutil.rmtree(store.folder(row.generation_key))
    shutil.rmtree(demo_run["state"] / "jobs")  # the engine's own job cache too: it must really render again
    journal_before = len(demo_run["ledger"].jobs(CLIENT))

    assert replay(demo_run, str(row_id)) == 3
    err = capsys.readouterr().err
    assert "refused" in err and "not in the generation store" in err and "--allow-provider-call" in err
    assert submits == []

    assert replay(demo_run, str(row_id), "--allow-provider-call") == 0
    out = capsys.readouterr().out
    assert "pixels    from local / brandforge-local-v1-studio again (1 provider call)" in out
    assert "result    identical bytes" in out
    assert len(submits) == 1
    jobs = demo_run["ledger"].jobs(CLIENT)
    assert len(jobs) == journal_before + 1 and jobs[-1].generation_key == row.generation_key  # journalled like any job
    assert store.get(row.generation_key) is not None  # and kept: the next replay needs no provider
    assert replay(demo_run, str(row_id)) == 0 and len(submits) == 1
    capsys.readouterr()


def test_a_changed_logo_is_reported(demo_run, capsys):
    row_id, row = demo_run["rows"]["coffee-cup.jpg"]
    logo = demo_run["logo"]
    original = logo.read_bytes()
    try:
        logo.write_bytes(original + b"\0")  # any other bytes
        assert replay(demo_run, str(row_id)) == 4
        err = capsys.readouterr().err
        assert f"the logo {logo} changed since the image was made" in err
        assert row.recipe_snapshot.logo.sha256 in err and content_hash(original + b"\0") in err
        logo.unlink()
        assert replay(demo_run, str(row_id)) == 4
        assert "is missing" in capsys.readouterr().err
    finally:
        logo.write_bytes(original)
    assert replay(demo_run, str(row_id)) == 0
    capsys.readouterr()


def test_a_different_published_file_is_a_mismatch_and_unknown_refs_are_named(demo_run, capsys):
    row_id, row = demo_run["rows"]["coffee-cup.jpg"]
    published = Path(row.published_url.removeprefix("file://"))
    original = published.read_bytes()
    try:
        published.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        assert replay(demo_run, str(row_id)) == 1
        assert "result    DIFFERENT bytes" in capsys.readouterr().out
    finally:
        published.write_bytes(original)
    assert replay(demo_run, "no-such-image") == 2
    assert "matches 'no-such-image'" in capsys.readouterr().err


def test_a_row_round_trips_its_snapshot(ledger_url, demo_profile, tmp_path):
    """SQLite and PostgreSQL keep the snapshot as written (the 0004 column)."""
    recipe = demo_profile.recipes[0]
    request = recipe.generation_request(source_image=f"file://{tmp_path / 'src.png'}", prompt="flat poster of a mug", seed=7)
    snap = recipe_snapshot(recipe=recipe, request=request, prompt=request.prompt, template="kitchen@2/de", caption="Tasse",
                           provider=demo_profile.provider, provider_ref="default", profile=demo_profile)
    ledger = Ledger(url=ledger_url)
    ledger.record(LedgerEntry(client="acme", source_uri="file:///a.png", state="failed", recipe_snapshot=snap))
    (back,) = ledger.entries(client="acme")
    assert back.recipe_snapshot == snap


def test_the_snapshot_keeps_no_secret(demo_profile, tmp_path):
    """Provider and target settings are recorded without their credentials (nor a nested block's settings)."""
    from prefect_aws import AwsCredentials, S3Bucket

    from brandforge.blocks.providers.fal import FalProvider
    from brandforge.blocks.targets.s3 import S3Target
    from brandforge.blocks.targets.wordpress import WordPressSite

    recipe = demo_profile.recipes[0]
    request = recipe.generation_request(source_image=f"file://{tmp_path / 'src.png'}", prompt="a mug", seed=7)
    bucket = S3Bucket(bucket_name="b", credentials=AwsCredentials(aws_access_key_id="AKIAKEYID", aws_secret_access_key="S3-SECRET"))
    for target in (WordPressSite(url="https://wp.example", username="u", application_password="WP-SECRET"), S3Target(bucket=bucket)):
        profile = demo_profile.model_copy(update={"target": target})
        snap = recipe_snapshot(recipe=recipe, request=request, prompt="a mug", template=None, caption=None,
                               provider=FalProvider(api_key="FAL-SECRET"), provider_ref="default", profile=profile)
        text = snap.model_dump_json()
        assert not any(secret in text for secret in ("FAL-SECRET", "WP-SECRET", "S3-SECRET", "AKIAKEYID"))
        assert snap.provider.secret_fields == ["api_key"]
    assert snap.target_settings["bucket"] == {"block_type": "s3-bucket", "block": None}


def test_fal_reports_another_seed_and_the_row_records_it(prefect_server, demo_profile, tmp_path):
    """fal answers with the seed it used: when it is not the one asked for, the generation and the ledger row keep it."""
    import asyncio

    from brandforge.tasks.generate import generate
    from tests.fakes.base import Knobs, serve
    from tests.providers.cases import all_cases

    source = tmp_path / "src.png"
    Image.new("RGB", (96, 64), (200, 120, 40)).save(source)
    case = {c.name: c for c in all_cases()}["fal"]
    fake = case.make_fake(Knobs(latency_s=0.02))
    fake.reported_seed = 987654
    recipe = Recipe(name="r", style="watercolour")
    request = recipe.generation_request(source_image=f"file://{source}", prompt="watercolour of a mug", seed=1234)
    store = tmp_path / "generations"
    with serve(fake):
        block = case.make_block(fake, None, tmp_path)
        result = asyncio.run(generate(request, block, str(tmp_path / "out"), poll_every=0.05,
                                                store_dir=str(store), generation_key="g" * 64))
    assert {r["body"]["seed"] for r in fake.requests if r["method"] == "POST"} == {1234}  # we asked for 1234
    assert result.reported_seed == 987654
    assert GenerationStore(store).get("g" * 64).reported_seed == 987654  # a later run from the store knows it too

    plan = AssetPlan(recipe=recipe, recipe_key="k", provider="fal", model=block.model, request=request, generation_key="g" * 64,
                     output_key="o" * 64, snapshot=recipe_snapshot(recipe=recipe, request=request, prompt=request.prompt,
                                                                   template=None, caption=None, provider=block,
                                                                   provider_ref="default", profile=demo_profile))
    row = ledger_entry(AssetRef(client="demo", uri=f"file://{source}", name="src.png"), plan=plan,
                       generation=GenerationResult(**result.model_dump()))
    assert row.recipe_snapshot.reported_seed == 987654 and row.seed == 1234
    assert row.recipe_snapshot.provider.wire["seed"] == 1234 and "api_key" in row.recipe_snapshot.provider.secret_fields
    assert "api_key" not in row.recipe_snapshot.provider.settings


def test_replay_finds_only_the_named_clients_row_of_a_shared_generation(ledger_url):
    """Two clients, one ledger, the same source bytes and recipe (so the same generation key): a
    replay by key, row id or URL for one client never picks up the other's row."""
    from brandforge.tasks.replay import ReplayError, find_row

    ledger = Ledger(url=ledger_url)
    key = "ab" * 32
    for client in ("acme", "globex"):
        ledger.record(LedgerEntry(client=client, source_uri=f"s3://{client}/mug.png", state="published", generation_key=key,
                                  published_url=f"https://{client}.example/mug.png"))
    (acme_id, _), = ledger.rows(client="acme")
    (globex_id, _), = ledger.rows(client="globex")

    for client, own_id in (("acme", acme_id), ("globex", globex_id)):
        for ref in (key, key[:12], f"https://{client}.example/mug.png", str(own_id)):
            row_id, entry = find_row(ledger, ref, client)
            assert (row_id, entry.client) == (own_id, client), ref
    with pytest.raises(ReplayError, match="client 'acme'"):
        find_row(ledger, str(globex_id), "acme")
    with pytest.raises(ReplayError):
        find_row(ledger, "https://globex.example/mug.png", "acme")
