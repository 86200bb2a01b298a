"""The generation store through the product: `catalog_refresh` against the Replicate fake.

- a recipe change that does not touch generation (a watermark anchor, a gate
  threshold, a review band) republishes from the store: 0 provider calls, $0,
  and the gallery still holds one entry per asset;
- a change of what the provider sees (strength) pays for new generations;
- a catalog run SIGKILLed after its jobs were accepted, then rerun: each asset's
  job is resumed from the ledger's journal, one billed job per asset.

Small N here; `bench/generation_cache.py` runs the phases at full size.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from brandforge.blocks.ledger import Ledger
from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.models import StepSpec
from tests.conftest import ROOT
from tests.fakes import replicate as fake_replicate
from tests.fakes.base import Knobs, serve
from tests.foundation.test_ledger_catalog import crops, refresh

pytestmark = pytest.mark.usefixtures("prefect_server")


def replicate_block(fake, tmp_path: Path, **kw) -> ReplicateProvider:
    # A limit group of its own: a SIGKILLed run's job-slot leases stay held on the session's server
    # until they expire, and must not queue the next test's Replicate jobs behind them.
    return ReplicateProvider(base_url=fake.url, api_key=fake_replicate.TOKEN, request_timeout_s=5.0,
                             job_dir=str(tmp_path / "jobs"), price_per_image_usd=0.01, requests_per_minute=6000,
                             limit_group=f"store-{tmp_path.name.lower().replace('_', '-')}"[:40], **kw)


def with_chain_param(profile, step: str, **params):
    recipes = [r.model_copy(update={"chain": [StepSpec(step=s.step, params={**s.params, **params}) if s.step == step else s
                                              for s in r.chain]}) for r in profile.recipes]
    return profile.model_copy(update={"recipes": recipes})


def gallery_entries(state: Path) -> int:
    return len(list((state / "gallery" / "demo" / "entries").glob("*.json")))


def test_recipe_changes_outside_generation_call_no_provider(demo_profile, demo_state, tmp_path):
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=0.05))
    catalog = crops(tmp_path / "catalog", 3)
    with serve(fake):
        profile = demo_profile.model_copy(update={"provider": replicate_block(fake, tmp_path)})
        first = refresh(profile, catalog, demo_state)
        assert first.counts == {"published": 3}, [o.label for o in first.outcomes]
        assert fake.stats["accepted"] == 3 and first.cost_usd == pytest.approx(0.03)

        # (a) a watermark anchor, (b) a gate threshold, (c) a review band: new recipe keys, same generations.
        changed = [
            with_chain_param(profile, "watermark", anchor="top-left"),
            profile.model_copy(update={"gates": profile.gates.model_copy(update={"min_sharpness": 21.0})}),
            profile.model_copy(update={"gates": profile.gates.model_copy(update={"review_band": {"aesthetic": 0.1}})}),
        ]
        for variant in changed:
            summary = refresh(variant, catalog, demo_state)
            assert summary.counts == {"published": 3}, [o.label for o in summary.outcomes]
            assert fake.stats["accepted"] == 3 and fake.stats["submits"] == 3  # no provider call at all
            assert summary.cost_usd == 0
            assert gallery_entries(demo_state) == 3  # republished assets replace their entries
        index = (demo_state / "gallery" / "index.html").read_text()
        assert index.count("<article>") == 3
        files = [p.name for p in (demo_state / "gallery" / "demo").glob("*.jpg")]
        assert len(files) == len(set(files)) and len([f for f in files if f.endswith("-before.jpg")]) == 3
        assert len([f for f in files if not f.endswith(("-before.jpg", "-9x16.jpg", "-16x9.jpg"))]) == 3  # replaced ones are gone

        ledger = Ledger(url=profile.ledger.url)
        rows = ledger.entries(client="demo")
        assert len(rows) == 12 and len({r.generation_key for r in rows}) == 3  # one generation per asset
        assert len({r.output_key for r in rows}) == 12
        assert len(ledger.jobs("demo")) == 3

        # What the provider sees changes: new generations are paid for.
        stronger = profile.model_copy(update={"recipes": [r.model_copy(update={"strength": 0.55}) for r in profile.recipes]})
        again = refresh(stronger, catalog, demo_state)
        assert again.counts == {"published": 3} and fake.stats["accepted"] == 6
        assert gallery_entries(demo_state) == 3


CATALOG_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from brandforge.flows.catalog_refresh import catalog_refresh
    catalog_refresh(client="demo", source={catalog!r}, work_dir={work!r})
""")


def test_killed_run_resumes_its_jobs_instead_of_paying_again(demo_profile, demo_state, tmp_path):
    """SIGKILL after the provider accepted every job; the rerun resumes them: one billed job per asset,
    and the dead run's job slots do not keep the rerun waiting for its leases' old five minutes."""
    from prefect.settings import PREFECT_API_URL

    n = 3
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=6.0))
    catalog = crops(tmp_path / "catalog", n)
    with serve(fake):
        # Exactly the jobs in flight: every slot is held by the run that is about to die.
        profile = demo_profile.model_copy(update={"provider": replicate_block(fake, tmp_path, max_concurrent_jobs=n)})
        profile.save("demo", overwrite=True)
        script = CATALOG_SCRIPT.format(root=str(ROOT), catalog=str(catalog), work=str(demo_state / "work"))
        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "BRANDFORGE_MAX_PARALLEL": str(n)}
        log = tmp_path / "killed-run.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=str(tmp_path), stdout=out, stderr=out)
        try:
            # Killed once every job is accepted *and* on record (a kill between the provider's answer and
            # the journal write is the one window left: the reservation then counts, the job id does not).
            journal = Ledger(url=profile.ledger.url)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None and (
                    fake.stats["accepted"] < n or len([j for j in journal.jobs("demo") if j.state == "submitted"]) < n):
                time.sleep(0.1)
            assert fake.stats["accepted"] == n, (fake.stats, log.read_text()[-3000:])
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        ledger = Ledger(url=profile.ledger.url)
        assert len([j for j in ledger.jobs("demo") if j.state == "submitted"]) == n  # on record before the wait
        killed_runs = {j.flow_run_id for j in ledger.jobs("demo")}

        rerun = refresh(profile, catalog, demo_state)
        assert rerun.counts == {"published": n}, [o.label for o in rerun.outcomes]
        assert fake.stats["accepted"] == n  # each asset's job paid once, over the killed run and its rerun
        assert {j.state for j in ledger.jobs("demo")} == {"succeeded"}
    # The killed process's asset runs and its catalog run are not left "Running" forever.
    assert asyncio.run(flow_run_states(killed_runs)) == {"CRASHED"}


async def flow_run_states(run_ids) -> set[str]:
    from prefect.client.orchestration import get_client

    states = set()
    async with get_client() as client:
        for run_id in run_ids:
            run = await client.read_flow_run(run_id)
            states.add(run.state.type.value)
            parent = await client.read_task_run(run.parent_task_run_id) if run.parent_task_run_id else None
            if parent is not None:
                states.add((await client.read_flow_run(parent.flow_run_id)).state.type.value)
    return states
