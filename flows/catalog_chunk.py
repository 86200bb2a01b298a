"""catalog_chunk: one slice of a catalog, taken by any worker of a work pool; and `run_chunks`, the catalog's side.

`catalog_refresh(client, chunks=N)` lists the catalog, splits it into N slices and starts one run of the
deployment `catalog-chunk/fleet` per slice (`run_deployment`, as subflows: they show under the catalog's run in
the UI). Each slice runs the very loop `catalog_refresh` runs in-process (`run_assets`), in whichever worker
takes it; the catalog waits for all of them and merges their outcomes into its own summary.

Nothing here has to be exactly-once: a slice whose run ends Crashed (its worker died; a heartbeat automation,
deployments/fleet.py, marks a silent run Crashed) or Failed is started again. The rerun skips what the dead run
published (ledger), resumes or reuses its provider jobs (the job journal and the generation store), so an asset
is neither lost nor paid twice. The slice's outcomes travel back as its persisted result: on several machines,
point Prefect's result storage at a shared bucket (`PREFECT_DEFAULT_RESULT_STORAGE_BLOCK`).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from typing_extensions import TypedDict

from brandforge.blocks.client_profile import ClientProfile
from brandforge.flows.catalog_refresh import MAX_PARALLEL, resolve_source, run_assets
from brandforge.models import AssetOutcome, AssetRef
from brandforge.tasks.ledger import record_orchestration_failure
from brandforge.tasks.load import list_catalog
from brandforge.tasks.profiles import check_profile, load_profile

# How many times a slice is started before its assets are recorded as failed (the next catalog run retries them).
CHUNK_ATTEMPTS = int(os.environ.get("BRANDFORGE_CHUNK_ATTEMPTS", "3"))


class ChunkResult(TypedDict):
    """What a slice's run hands back: its outcomes, and who ran it (the worker's name, host and pid).

    A plain dict, not a model of this module: a work-pool run loads this file as a script (module
    `catalog_chunk`), and a class defined here would not unpickle in the catalog's process."""

    outcomes: list[AssetOutcome]
    worker: str | None
    host: str
    pid: int


@flow(name="catalog-chunk", task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL), persist_result=True)
def catalog_chunk(
    client: str,
    assets: list[AssetRef | str],
    source: str | None = None,
    work_dir: str = ".brandforge/work",
    run_key: str | None = None,
) -> ChunkResult:
    """Process `assets` (AssetRefs, or names in the client's catalog) exactly as `catalog_refresh` would.

    `run_key` is the catalog run's: a run budget holds across all of its slices."""
    logger = get_run_logger()
    profile = load_profile(client)
    check_profile(profile)
    source_folder, storage = resolve_source(profile, source)
    refs = [a for a in assets if isinstance(a, AssetRef)]
    names = {a for a in assets if isinstance(a, str)}
    if names:  # names are looked up in the catalog's listing (records and URIs come from there)
        found = [a for a in list_catalog(storage, client, exclude_prefix=profile.archive_prefix) if a.name in names]
        missing = names - {a.name for a in found}
        if missing:
            logger.warning("not in %s's catalog, skipped: %s", client, ", ".join(sorted(missing)))
        refs += found
    worker = os.environ.get("PREFECT__WORKER_NAME")
    logger.info("%d asset(s) of %s on worker %s (pid %d)", len(refs), client, worker, os.getpid())
    outcomes = run_assets(refs, profile, source_folder, work_dir, run_key or str(flow_run.id or f"local-{time.time()}"))
    return {"outcomes": outcomes, "worker": worker, "host": socket.gethostname(), "pid": os.getpid()}


# --------------------------------------------------------------------------- the catalog's side


def chunk_deployment_exists(name: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
            return True
        except ObjectNotFound:
            return False


def split(assets: list[AssetRef], chunks: int) -> list[list[AssetRef]]:
    """`chunks` contiguous slices of near-equal size (fewer when there are fewer assets)."""
    n = max(1, min(chunks, len(assets)))
    size, extra = divmod(len(assets), n)
    parts, at = [], 0
    for i in range(n):
        end = at + size + (1 if i < extra else 0)
        parts.append(assets[at:end])
        at = end
    return parts


def run_chunks(deployment: str, profile: ClientProfile, assets: list[AssetRef], source_folder: str | None, work_dir: str,
               run_key: str, chunks: int, on_finished: Callable[[int], None] = lambda done: None,
               attempts: int = CHUNK_ATTEMPTS, poll_s: float = 2.0) -> list[AssetOutcome]:
    """Start one `deployment` run per slice, wait for all (restarting a slice whose run crashed or failed, up to
    `attempts` starts), and return every asset's outcome in the catalog's order."""
    logger = get_run_logger()
    parts = split(assets, chunks)
    client_id = profile.client_id
    running: dict[UUID, tuple[int, int]] = {}  # flow run id -> (slice, attempt)
    results: dict[int, list[AssetOutcome]] = {}

    def start(i: int, attempt: int) -> None:
        again = f", attempt {attempt}" if attempt > 1 else ""
        run = run_deployment(
            deployment, timeout=0, as_subflow=True, flow_run_name=f"{client_id} chunk {i + 1}/{len(parts)}{again}",
            parameters={"client": client_id, "assets": [a.model_dump(mode="json") for a in parts[i]],
                        "source": source_folder, "work_dir": work_dir, "run_key": run_key},
        )
        running[run.id] = (i, attempt)

    for i in range(len(parts)):
        start(i, 1)
    logger.info("%d asset(s) in %d chunk(s) on %s", len(assets), len(parts), deployment)
    with get_client(sync_client=True) as api:
        while running:
            time.sleep(poll_s)
            for run_id, (i, attempt) in list(running.items()):
                state = api.read_flow_run(run_id).state
                if state is None or not state.is_final():
                    continue
                del running[run_id]
                result = state.result(raise_on_failure=False) if state.is_completed() else None
                if isinstance(result, dict) and "outcomes" in result:
                    results[i] = result["outcomes"]
                    logger.info("chunk %d/%d: %d asset(s) on worker %s", i + 1, len(parts), len(results[i]), result["worker"])
                    on_finished(sum(len(o) for o in results.values()))
                elif attempt < attempts:
                    logger.warning("chunk %d/%d ended %s (%s): starting it again", i + 1, len(parts), state.type.value, state.message)
                    start(i, attempt + 1)
                else:
                    error = RuntimeError(f"chunk run {run_id} ended {state.type.value} {attempt} time(s): {state.message}")
                    results[i] = [record_orchestration_failure(profile.ledger, a, error) for a in parts[i]]
                    on_finished(sum(len(o) for o in results.values()))
    return [o for i in range(len(parts)) for o in results[i]]
