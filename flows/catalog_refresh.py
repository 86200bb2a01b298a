"""catalog_refresh: list a client's catalog, fan `process_asset` out, summarise.

Checks the client's profile before touching any image, skips what the ledger
says is already done for the same bytes and recipe, runs assets in parallel
(a thread pool; providers' own limits apply inside), and leaves three
artifacts on the run: a progress bar updated as assets finish, a markdown
summary (counts by final state, time, cost) and a table of every asset —
plus the gate report (every variant's scores, an aesthetic-score histogram).

A run in which assets failed does not look like a clean success: its final
state's message gives the counts, it is `Failed` when every asset failed, and
it emits `brandforge.catalog.degraded` for automations (see `final_state`, flows/run_state.py).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.filesystems import LocalFileSystem
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_aws import S3Bucket

from brandforge.blocks.client_profile import ClientProfile
from brandforge.blocks.targets.gallery import LocalGallery
from brandforge.flows.process_asset import asset_pipeline, process_asset
from brandforge.flows.run_state import STATES, final_state
from brandforge.models import AssetOutcome, AssetRef, CatalogSummary, InvalidInput
from brandforge.tasks.abandoned_runs import sweep_dead_runs
from brandforge.tasks.gates.report import create_gate_report
from brandforge.tasks.ledger import record_orchestration_failure
from brandforge.tasks.load import list_catalog
from brandforge.tasks.previews import asset_preview
from brandforge.tasks.profiles import check_profile, load_profile
from brandforge.tasks.provider_limits import cool_down, warm_up
from brandforge.tasks.retry import retry_orchestration_errors

# Assets in progress at once (threads). Most of an asset's time is spent waiting on a provider's job, so
# this is sized for keeping a provider's rate limit busy, not for cores: an asset holds its thread for the
# job (~5 s at L = 5 s) and its stages (2–4.5 s on 2 busy cores), so 120 jobs/min needs 16–19 threads.
# With 16, the threads bound whenever the stages slowed (0.73–0.87 of R); with 24 a queue of ready
# assets waits for the rate limit instead (bench/catalog_provider.py).
MAX_PARALLEL = int(os.environ.get("BRANDFORGE_MAX_PARALLEL", "24"))
# The work-pool deployment of `catalog_chunk` that a chunked catalog starts (deployments/fleet.py deploys it).
CHUNK_DEPLOYMENT = os.environ.get("BRANDFORGE_CHUNK_DEPLOYMENT", "catalog-chunk/fleet")


@task(name="run-asset", task_run_name="asset {asset.name}", cache_policy=NO_CACHE,
      retries=2, retry_delay_seconds=[5, 20], retry_jitter_factor=0.5, retry_condition_fn=retry_orchestration_errors)
def run_asset(asset: AssetRef, profile: ClientProfile, source_folder: str | None, work_dir: str, run_key: str) -> AssetOutcome:
    """One asset, its stages as task runs nested in this one (named after the asset in the UI).

    Not a subflow: a flow run costs ~1 s of API work on a small server, more than the asset's own
    stages; a task run ~10–40 ms. A borderline asset comes back as `review` (see `review_asset`)."""
    return asset_pipeline(asset, profile, source_folder, work_dir, run_key, defer_review=True)


@task(name="review-asset", task_run_name="review {asset.name}", cache_policy=NO_CACHE)
def review_asset(asset: AssetRef, profile: ClientProfile, source_folder: str | None, work_dir: str, run_key: str) -> AssetOutcome:
    """A borderline asset's own `process-asset` run, paused for a person's answer in the UI; it
    regenerates nothing (the generation is in the store) and records the row the answer decides."""
    return process_asset(asset, profile=profile, source_folder=source_folder, work_dir=work_dir, run_key=run_key)


# The first window opens one asset per RAMP_S. Opened at once, 24 assets shared the GIL and the
# Prefect server from the first millisecond, and the first of them reached its provider 2.4 s after
# the run began instead of ~1 s (bench/catalog_provider.py); later ones start as earlier ones finish.
RAMP_S = 0.05


def run_window(assets: Iterable[AssetRef], window: int, start: Callable[[AssetRef], PrefectFuture],
               ramp_s: float = RAMP_S) -> Iterator[tuple[AssetRef, PrefectFuture]]:
    """Start assets as earlier ones finish, at most `window` at a time, and yield each finished one:
    a catalog of any size holds `window` futures, not one per asset."""
    pending: dict[PrefectFuture, AssetRef] = {}
    source = iter(assets)
    started = 0
    while True:
        while len(pending) < window and (asset := next(source, None)) is not None:
            if 0 < started < window:
                time.sleep(ramp_s)
            pending[start(asset)] = asset
            started += 1
        if not pending:
            return
        done = next(as_completed(list(pending)))
        yield pending.pop(done), done


def artifact_key(client: str, what: str) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in client.lower())
    return f"{slug}-{what}"


def summary_markdown(summary: CatalogSummary) -> str:
    per_min = summary.total / summary.seconds * 60 if summary.seconds else 0.0
    lines = [
        f"# Catalog refresh: {summary.client}",
        "",
        f"**{summary.total} assets** in {summary.seconds:.1f} s ({per_min:.0f} assets/min), cost **${summary.cost_usd:.2f}**",
        "",
        "| final state | assets |",
        "|---|---|",
        *[f"| {state} | {summary.counts.get(state, 0)} |" for state in STATES],
    ]
    skipped = summary.counts.get("skipped", 0)
    if skipped:
        lines += ["", f"{skipped} asset(s) were already done for the same source bytes and recipe: no generation, no publish."]
    failures = [o for o in summary.outcomes if o.state in ("failed", "quarantined")]
    if failures:
        lines += ["", "## Needs attention", ""] + [f"- `{o.name}` — {o.label}" for o in failures]
    if summary.gallery:
        lines += ["", f"Gallery: `{summary.gallery}`"]
    return "\n".join(lines)


def outcome_rows(outcomes: list[AssetOutcome]) -> list[dict]:
    rows = []
    for o in outcomes:
        chosen = o.scores.get("chosen")
        scores = o.scores.get(f"variant-{chosen}") if chosen is not None else None
        rows.append({
            "asset": o.name, "preview": asset_preview(o), "state": o.state,
            "output": o.published_url or (o.output_uris[0] if o.output_uris else ""),
            "reason": o.reason[:300], "cost_usd": round(o.cost_usd, 4), "seconds": o.seconds,
            "scores": ", ".join(f"{k} {v}" for k, v in (scores or {}).items()),
        })
    return rows


def resolve_source(profile: ClientProfile, source: str | None) -> tuple[str | None, LocalFileSystem | S3Bucket]:
    """The folder `source` (absolute) when given, else the profile's source storage."""
    source_folder = str(Path(source).resolve()) if source else None
    if source_folder:
        return source_folder, LocalFileSystem(basepath=source_folder)
    if profile.source is not None:
        return None, profile.source
    raise InvalidInput(f"client {profile.client_id!r} has no source storage in its profile; pass source=<folder>")


def run_assets(assets: list[AssetRef], profile: ClientProfile, source_folder: str | None, work_dir: str, run_key: str,
               on_finished: Callable[[int], None] = lambda done: None) -> list[AssetOutcome]:
    """The catalog's loop, shared by `catalog_refresh` and `catalog_chunk` (flows/catalog_chunk.py): each asset a
    `run-asset` task, ≤ 2×MAX_PARALLEL in flight, then a paused review run per borderline asset. Outcomes come
    back in the assets' order; `on_finished(n)` is called as the n-th asset finishes."""
    logger = get_run_logger()
    outcomes: list[AssetOutcome] = []

    def settle(asset: AssetRef, future: PrefectFuture) -> AssetOutcome:
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - one asset's orchestration failure must not end the catalog
            logger.error("asset %s could not be run: %s", asset.name, exc)
            return record_orchestration_failure(profile.ledger, asset, exc)

    def start(task_: Any) -> Callable[[AssetRef], PrefectFuture]:
        return lambda asset: task_.submit(asset, profile, source_folder, work_dir, run_key)

    if assets:  # the provider's limits and first rate slots, before the first assets need them
        warm_up(profile.provider)
    for asset, future in run_window(assets, 2 * MAX_PARALLEL, start(run_asset)):
        outcomes.append(settle(asset, future))
        on_finished(len(outcomes))
    if assets:
        cool_down(profile.provider)
    # Borderline assets waited for nobody so far: each now gets a run of its own that pauses for a person.
    waiting = [next(a for a in assets if a.uri == o.source_uri) for o in outcomes if o.state == "review"]
    if waiting:
        logger.info("%d asset(s) need a person's review; the rest of the catalog is done", len(waiting))
        reviewed = {a.uri: settle(a, f) for a, f in run_window(waiting, MAX_PARALLEL, start(review_asset))}
        outcomes = [reviewed.get(o.source_uri, o) if o.state == "review" else o for o in outcomes]
    order = {a.uri: i for i, a in enumerate(assets)}
    outcomes.sort(key=lambda o: order.get(o.source_uri, 0))
    return outcomes


def summarise(client: str, profile: ClientProfile, outcomes: list[AssetOutcome], started: float) -> CatalogSummary:
    """The run's summary (counts, time, cost, the gallery's index rendered once for all its assets)."""
    gallery = None
    if isinstance(profile.target, LocalGallery):
        gallery = str(profile.target.render_index())
    return CatalogSummary(
        client=client, counts=dict(Counter(o.state for o in outcomes)), outcomes=outcomes,
        seconds=round(time.monotonic() - started, 2), cost_usd=round(sum(o.cost_usd for o in outcomes), 4), gallery=gallery,
    )


@flow(name="catalog-refresh", task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL))
def catalog_refresh(
    client: str,
    source: str | None = None,
    pattern: str = "*",
    limit: int | None = None,
    work_dir: str = ".brandforge/work",
    chunks: int | None = None,
    chunk_deployment: str = CHUNK_DEPLOYMENT,
) -> CatalogSummary:
    """Refresh every image of `client`'s catalog (or of the folder `source`).

    With `chunks` and the deployment `chunk_deployment` on a work pool, the catalog is split into that many
    `catalog-chunk` runs that the pool's workers take in parallel (flows/catalog_chunk.py)."""
    logger = get_run_logger()
    started = time.monotonic()
    # This run's process goes on record; earlier runs of this client whose process died stop showing Running.
    sweep_dead_runs(str(flow_run.id) if flow_run.id else None, "catalog-refresh", client)
    profile = load_profile(client)
    check_profile(profile)
    source_folder, storage = resolve_source(profile, source)
    assets = list_catalog(storage, client, pattern, limit or profile.max_assets_per_run, exclude_prefix=profile.archive_prefix)
    logger.info("%d asset(s) in %s's catalog", len(assets), client)

    run_key = str(flow_run.id or f"local-{time.time()}")
    progress_id = create_progress_artifact(0.0, key=artifact_key(client, "catalog-progress"), description=f"{client}: assets finished")

    shown_at = [0.0]

    def progress(done: int) -> None:
        # At most one update a second (and the last): each is a write on the Prefect server, which
        # through a large catalog competes with the limit calls every waiting asset sits behind.
        if time.monotonic() - shown_at[0] >= 1.0 or done == len(assets):
            shown_at[0] = time.monotonic()
            update_progress_artifact(progress_id, 100.0 * done / max(1, len(assets)), description=f"{done}/{len(assets)} assets finished")

    from brandforge.flows.catalog_chunk import chunk_deployment_exists, run_chunks

    if chunks and assets and chunk_deployment_exists(chunk_deployment):
        outcomes = run_chunks(chunk_deployment, profile, assets, source_folder, work_dir, run_key, chunks, progress)
    else:
        if chunks:
            logger.warning("no deployment %s: the catalog runs in this process", chunk_deployment)
        outcomes = run_assets(assets, profile, source_folder, work_dir, run_key, progress)
    if not assets:
        update_progress_artifact(progress_id, 100.0, description="empty catalog")

    summary = summarise(client, profile, outcomes, started)
    create_markdown_artifact(summary_markdown(summary), key=artifact_key(client, "catalog-summary"), description=f"{client}: catalog refresh summary")
    create_table_artifact(outcome_rows(outcomes), key=artifact_key(client, "catalog-assets"), description=f"{client}: every asset, its state and scores")
    create_gate_report(client, outcomes, key_prefix=artifact_key(client, "catalog"),
                       threshold=profile.gates.min_aesthetic if profile.aesthetic else None)
    logger.info("catalog %s: %s in %.1fs", client, summary.counts, summary.seconds)
    return final_state(summary, str(flow_run.id) if flow_run.id else None)  # type: ignore[return-value]


def run_catalog(client: str, **parameters: Any) -> CatalogSummary:
    """`catalog_refresh` called from Python, its summary returned even when every asset failed
    (the run is then Failed in the UI, and a bare call would raise Prefect's TypeError about a
    result that is not an exception)."""
    state = catalog_refresh(client=client, return_state=True, **parameters)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):  # crashed or cancelled: no summary to give
        raise result
    return result
