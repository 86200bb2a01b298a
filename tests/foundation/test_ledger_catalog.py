"""The ledger through the product: `catalog_refresh` on a PostgreSQL ledger, two clients, faults.

- seeds at or above 2**31 publish and are recorded; reruns generate nothing;
- two clients sharing one ledger, same bytes and recipe, publish to their own buckets;
- a fault soak: every job the provider billed is in the ledger's journal, at its price.

Small N here; `bench/ledger_soak.py` runs the soak at full size.
"""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from brandforge.blocks.ledger import Ledger
from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.blocks.targets.s3 import S3Target
from brandforge.flows.catalog_refresh import catalog_refresh
from tests.conftest import DEMO_CATALOG, new_postgres_database
from tests.fakes import replicate as fake_replicate
from tests.fakes.base import Knobs, serve

pytestmark = pytest.mark.usefixtures("prefect_server")


def crops(folder: Path, count: int) -> Path:
    """`count` distinct real photos: crops of the demo catalog at different offsets."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in DEMO_CATALOG.iterdir() if p.suffix in (".jpg", ".png", ".webp"))
    for i in range(count):
        img = Image.open(sources[i % len(sources)]).convert("RGB")
        side = min(img.size) * 3 // 4
        off = (i // len(sources)) * 17
        img.crop((off, off, off + side, off + side)).resize((384, 384)).save(folder / f"product-{i:02d}.jpg", quality=92)
    return folder


def refresh(profile, catalog: Path, state: Path):
    profile.save(profile.client_id, overwrite=True)
    # A run where every asset failed ends Failed; its summary is still the run's result.
    run = catalog_refresh(client=profile.client_id, source=str(catalog), work_dir=str(state / "work"), return_state=True)
    return run.result(raise_on_failure=False)


def test_seeds_over_2_31_publish_on_postgresql_and_reruns_generate_nothing(demo_profile, demo_state, tmp_path, postgres_server):
    """The issue's reproduction: 12 assets × 3 runs on a PostgreSQL ledger."""
    demo_profile.ledger = Ledger(url=new_postgres_database(postgres_server))
    catalog = crops(tmp_path / "catalog", 12)
    first = refresh(demo_profile, catalog, demo_state)
    assert first.counts == {"published": 12}, [o.label for o in first.outcomes]
    for _ in range(2):
        again = refresh(demo_profile, catalog, demo_state)
        assert again.counts == {"skipped": 12}
    ledger = demo_profile.ledger
    rows = ledger.entries(client="demo")
    assert len(rows) == 12 and {r.state for r in rows} == {"published"}
    assert any(r.seed >= 2**31 for r in rows), sorted(r.seed for r in rows)  # the values PostgreSQL's int4 refused
    assert len(ledger.jobs("demo")) == 12  # one generation per asset, none on the reruns
    assert len(list((demo_state / "gallery" / "demo" / "entries").glob("*.json"))) == 12


@pytest.fixture
def two_client_buckets(moto_s3, s3_bucket_block):
    a = s3_bucket_block
    b = a.model_copy(update={"bucket_name": a.bucket_name + "-b"})
    a.credentials.get_s3_client().create_bucket(Bucket=b.bucket_name)
    return a, b


def test_two_clients_sharing_a_ledger_publish_to_their_own_buckets(demo_profile, demo_state, tmp_path, postgres_server,
                                                                   two_client_buckets):
    shared = Ledger(url=new_postgres_database(postgres_server))
    catalog = crops(tmp_path / "catalog", 3)
    bucket_a, bucket_b = two_client_buckets
    profile_a = demo_profile.model_copy(update={"client_id": "client-a", "ledger": shared, "target": S3Target(bucket=bucket_a)})
    profile_b = demo_profile.model_copy(update={"client_id": "client-b", "ledger": shared, "target": S3Target(bucket=bucket_b)})
    assert refresh(profile_a, catalog, demo_state).counts == {"published": 3}
    assert refresh(profile_b, catalog, demo_state).counts == {"published": 3}  # same bytes, same recipe

    s3 = bucket_a.credentials.get_s3_client()
    for profile, bucket in ((profile_a, bucket_a), (profile_b, bucket_b)):
        objects = s3.list_objects_v2(Bucket=bucket.bucket_name).get("Contents", [])
        assert len([o for o in objects if not o["Key"].endswith(".json")]) >= 3, (bucket.bucket_name, objects)
        rows = shared.entries(client=profile.client_id)
        assert len(rows) == 3 and all(bucket.bucket_name in r.published_url for r in rows)
        assert all(r.target_key == profile.target.target_key for r in rows)
    # Same generation keys for both clients, yet each has its own receipt.
    assert {r.generation_key for r in shared.entries(client="client-a")} == {r.generation_key for r in shared.entries(client="client-b")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_fault_soak_every_billed_job_is_recorded(demo_profile, demo_state, tmp_path, request, backend, s3_bucket_block):
    """Provider faults (5xx, corrupt outputs) and a publish that fails after the generation was
    paid: the journal holds every job the provider accepted, at its price."""
    if backend == "postgresql":
        demo_profile.ledger = Ledger(url=new_postgres_database(request.getfixturevalue("postgres_server")))
    # 5xx answers and two corrupt downloads (re-fetched); the full-size soak is bench/ledger_soak.py.
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=0.05, faults=["500", "503", "500", "502"],
                                              output_faults=["corrupt", "corrupt"], webhook="lost"))
    catalog = crops(tmp_path / "catalog", 4)
    with serve(fake):
        demo_profile.provider = ReplicateProvider(
            base_url=fake.url, api_key=fake_replicate.TOKEN, request_timeout_s=2.0, job_dir=str(tmp_path / "jobs"),
            price_per_image_usd=0.0115, requests_per_minute=6000, max_concurrent_jobs=4,
        )
        # A bucket that does not exist yet: every publish fails after its generation was paid for.
        missing = s3_bucket_block.model_copy(update={"bucket_name": s3_bucket_block.bucket_name + "-later"})
        demo_profile.target = S3Target(bucket=missing)
        first = refresh(demo_profile, catalog, demo_state)
        assert first.counts.get("failed") == 4, first.counts
        missing.credentials.get_s3_client().create_bucket(Bucket=missing.bucket_name)
        second = refresh(demo_profile, catalog, demo_state)
        assert second.counts.get("published", 0) >= 1, second.counts
    billed = fake.stats["accepted"]
    jobs = [j for j in demo_profile.ledger.jobs("demo") if j.job_id]
    assert billed >= 4 and len(jobs) == billed, (billed, len(jobs), fake.stats)
    assert demo_profile.ledger.spent("demo") == Decimal("0.0115") * billed
    assert {j.job_id for j in jobs} == set(fake.jobs)
    assert json.dumps(fake.stats)  # the figures the bench prints
    shutil.rmtree(tmp_path / "jobs", ignore_errors=True)
