"""Scale-out: a Prefect server on PostgreSQL, two process workers on one pool, a catalog in chunks.

One fleet for the module (deployments/fleet.py): the server's database and the ledger live on the session's
PostgreSQL. The catalog runs in this process; its chunks run in the workers' flow-run processes.

- both workers take chunks; every asset is published once (ledger, journal, gallery);
- a worker and the chunk it runs are SIGKILLed mid-chunk: the heartbeat automation marks the run Crashed,
  the catalog starts the chunk again on the other worker, and nothing is lost or paid twice.
"""

from __future__ import annotations

import contextvars
import os
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from brandforge.blocks.ledger import Ledger
from brandforge.flows.catalog_refresh import catalog_refresh
from tests.conftest import new_postgres_database
from tests.foundation.test_ledger_catalog import crops

HEARTBEAT_S = 30
CRASH_AFTER_S = 75  # 2.5 heartbeats: a loaded 2-core machine may delay one


@pytest.fixture(scope="module")
def crew(postgres_server, tmp_path_factory):
    from brandforge.deployments.fleet import fleet
    from brandforge.deployments.serve import register_block_types

    state = tmp_path_factory.mktemp("fleet")
    # One asset at a time in a chunk's process: a chunk then runs for seconds after its first asset is published,
    # so the kill lands mid-chunk (24 at once finish a 5-asset chunk within a second of its first publish).
    with fleet(new_postgres_database(postgres_server), state, workers=2, limit=2, heartbeat_s=HEARTBEAT_S,
               crash_after_s=CRASH_AFTER_S, worker_settings={"BRANDFORGE_MAX_PARALLEL": "1"}) as crew:
        register_block_types()
        yield crew


def client_setup(demo_profile, postgres_server, name: str):
    profile = demo_profile.model_copy(update={"client_id": name, "ledger": Ledger(url=new_postgres_database(postgres_server))})
    profile.save(name, overwrite=True)
    return profile


def chunk_runs(catalog_run_id) -> list:
    """The catalog run's `catalog-chunk` runs (its subflows), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["catalog-chunk"])),
                                     flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[catalog_run_id])))
    return sorted(runs, key=lambda r: r.created)


def assert_each_asset_once(profile, state: Path, count: int) -> None:
    rows = profile.ledger.entries(client=profile.client_id)
    published = [r for r in rows if r.state == "published"]
    assert len(published) == count and len({r.source_uri for r in published}) == count, [(r.source_uri, r.state) for r in rows]
    jobs = profile.ledger.jobs(profile.client_id)
    billed = [j for j in jobs if j.job_id]  # accepted by the provider (a reservation a kill cut short has no job)
    assert len(billed) == count and len({j.generation_key for j in billed}) == count, \
        [(j.generation_key[:8], j.job_id, j.state) for j in jobs]
    others = [(j.state, j.generation_key[:8], j.flow_run_id) for j in jobs if not j.job_id]
    assert all(state in ("reserved", "released") for state, *_ in others), others
    print("journal rows without a provider job:", others)
    assert len(list((state / "gallery" / profile.client_id / "entries").glob("*.json"))) == count


def test_two_workers_share_a_chunked_catalog(crew, demo_profile, demo_state, tmp_path, postgres_server):
    profile = client_setup(demo_profile, postgres_server, "fleet-a")
    catalog = crops(tmp_path / "catalog", 8)
    run = catalog_refresh(client="fleet-a", source=str(catalog), work_dir=str(demo_state / "work"), chunks=4, return_state=True)
    summary = run.result()
    assert summary.counts == {"published": 8}, [o.label for o in summary.outcomes]
    assert [o.name for o in summary.outcomes] == sorted(p.name for p in catalog.iterdir())  # the catalog's order

    runs = chunk_runs(run.state_details.flow_run_id)
    assert len(runs) == 4 and all(r.state.is_completed() for r in runs)
    workers = {r.state.result()["worker"] for r in runs}
    assert workers == {"worker-1", "worker-2"}, workers  # both workers took chunks
    assert_each_asset_once(profile, demo_state, 8)


def test_a_worker_killed_mid_chunk_loses_nothing_and_pays_nothing_twice(crew, demo_profile, demo_state, tmp_path, postgres_server):
    profile = client_setup(demo_profile, postgres_server, "fleet-b")
    catalog = crops(tmp_path / "catalog", 10)
    done: dict = {}
    # In this test's context: it holds the fleet's API URL (a bare thread would start from the defaults).
    thread = threading.Thread(target=contextvars.copy_context().run, args=(lambda: done.update(state=catalog_refresh(
        client="fleet-b", source=str(catalog), work_dir=str(demo_state / "work"), chunks=2, return_state=True)),))
    thread.start()

    # Mid-chunk: some asset published, a chunk still running in a worker's flow-run process.
    deadline, victim = time.monotonic() + 240, None
    while victim is None and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.5)
        if not any(r.state == "published" for r in profile.ledger.entries(client="fleet-b")):
            continue
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs()
        victim = next((r for r in runs if r.name.startswith("fleet-b chunk") and r.state.is_running() and r.infrastructure_pid), None)
    assert victim is not None, "no chunk was running when an asset had been published"
    pid = int(victim.infrastructure_pid.rsplit(":", 1)[-1])
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    worker = next(name for name, proc in crew.workers.items() if proc.pid == parent)
    published_before = len([r for r in profile.ledger.entries(client="fleet-b") if r.state == "published"])
    killed_at = datetime.now(timezone.utc)
    os.killpg(crew.workers[worker].pid, signal.SIGKILL)  # the worker and its own process group
    os.kill(pid, signal.SIGKILL)  # the chunk's flow-run process (its own session)
    crew.workers[worker].wait()

    thread.join(CRASH_AFTER_S + 300)
    assert not thread.is_alive(), "the catalog did not finish after the kill"
    summary = done["state"].result()
    # What the killed chunk published before it died is `skipped` by its rerun (the ledger has it): not redone.
    assert set(summary.counts) <= {"published", "skipped"} and summary.total == 10, [o.label for o in summary.outcomes]
    assert published_before < 10 and summary.counts.get("skipped", 0) <= published_before

    runs = chunk_runs(done["state"].state_details.flow_run_id)
    by_id = {r.id: r for r in runs}
    assert by_id[victim.id].state.is_crashed(), by_id[victim.id].state  # marked by the heartbeat automation
    finished = [r for r in runs if r.state.is_completed()]
    assert len(finished) == 2 and len(runs) == 3, [(r.name, r.state.type) for r in runs]
    # The rerun (created after the kill) ran on the surviving worker. The other original chunk may have
    # finished on either worker before the kill: only the rerun is bound to the survivor.
    reruns = [r for r in finished if r.created > killed_at]
    assert len(reruns) == 1, [(r.name, r.created, killed_at) for r in runs]
    assert {r.state.result()["worker"] for r in finished} <= set(crew.workers)
    assert reruns[0].state.result()["worker"] != worker, (reruns[0].state.result(), worker)
    assert_each_asset_once(profile, demo_state, 10)
