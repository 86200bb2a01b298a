"""Ledger tasks: assemble each asset's row and record how it ended (`tasks.prompt.plan_asset` looks up what is done).

`ledger_entry` is the one place an asset's ledger row is built: from the typed
results its stages returned (loaded source, plan, generation, candidates, gate
decision, publish receipt) and the failure that stopped it, if any.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prefect.events import emit_event
from prefect.runtime import flow_run
from sqlalchemy.exc import OperationalError

from brandforge.blocks.ledger import Ledger
from brandforge.models import (
    AssetOutcome,
    AssetPlan,
    AssetRef,
    Candidate,
    GenerationResult,
    LedgerEntry,
    LoadedAsset,
    PublishReceipt,
)

if TYPE_CHECKING:
    from brandforge.tasks.gates.decide import GateDecision


def ledger_entry(
    asset: AssetRef,
    *,
    loaded: LoadedAsset | None = None,
    plan: AssetPlan | None = None,
    generation: GenerationResult | None = None,
    candidates: list[Candidate] | None = None,
    decision: "GateDecision | None" = None,
    quarantined: list[str] | None = None,
    receipt: PublishReceipt | None = None,
    target_key: str | None = None,
    failure: str | None = None,
    timings: dict[str, float] | None = None,
    generation_store: str | None = None,
) -> LedgerEntry:
    """The asset's row, from whatever stages ran. A `failure` ("stage: reason") makes it `failed`;
    otherwise the gate decision says: published (with the receipt), quarantined, or failed for a
    regeneration (`failed` is not final: the next run tries again). The plan's recipe snapshot
    (everything that decided the image, as values) is completed with what the generation reported
    (the provider's own seed, when it differs) and where the raw images are kept."""
    row: dict = {"client": asset.client, "source_uri": asset.uri, "state": "failed", "timings": timings or {}}
    if loaded is not None:
        row["source_key"] = loaded.source_key
    if plan is not None:
        row.update(recipe=plan.recipe.name, recipe_key=plan.recipe_key)
        if plan.request is not None:
            row.update(generation_key=plan.generation_key, output_key=plan.output_key, seed=plan.request.seed,
                       params=plan.params, provider=plan.provider, model=plan.model)
        if plan.snapshot is not None:
            row["recipe_snapshot"] = plan.snapshot.model_copy(update={
                "generation_store": generation_store,
                "reported_seed": generation.reported_seed if generation is not None else None})
    if generation is not None:
        row.update(job_ids=generation.job_ids, cost_usd=generation.cost_usd)
        # The generate stage's own breakdown (slot waits, submit → image, polls) beside the stage times.
        row["timings"] = {**row["timings"], **{f"generate.{k}": v for k, v in generation.timings.items()}}
    if candidates is not None:
        row["output_uris"] = [c.path for c in candidates]
    if decision is not None:
        row["scores"] = decision.ledger_scores()
    if failure is not None:
        row["reason"] = failure
    elif decision is not None and decision.outcome == "quarantine":
        row.update(state="quarantined", reason=decision.reason, output_uris=quarantined or row.get("output_uris", []))
    elif decision is not None and decision.outcome == "regenerate":
        row["reason"] = decision.reason
    elif decision is not None and receipt is not None:
        row.update(state="published", target=receipt.target, target_key=target_key, published_url=receipt.url,
                   remote_ids=receipt.remote_ids, phash=decision.phashes.get(decision.chosen.index) if decision.chosen else None)
    return LedgerEntry.model_validate(row)


def asset_outcome(asset: AssetRef, row: LedgerEntry, *, seconds: float, skipped: bool = False) -> AssetOutcome:
    """What the catalog sees of an asset's end; `skipped`: `row` is the decision already taken earlier."""
    return AssetOutcome(
        client=asset.client, source_uri=asset.uri, name=asset.name, state="skipped" if skipped else row.state,  # type: ignore[arg-type]
        reason=f"already {row.state}" if skipped else row.reason, source_key=row.source_key, recipe=row.recipe, recipe_key=row.recipe_key,
        generation_key=row.generation_key, output_key=row.output_key, output_uris=row.output_uris, published_url=row.published_url,
        scores=row.scores, cost_usd=0.0 if skipped else float(row.cost_usd), seconds=seconds,
    )


def record_outcome(ledger: Ledger, entry: LedgerEntry, *, attempts: int = 4, delay_s: float = 1.0) -> int:
    """Append the asset's row and announce its end as a Prefect event.

    Not a task run of its own: it is bookkeeping inside the asset's run, and a task run costs the
    Prefect server more than the row (its task-run recorder was the server's largest cost through
    `catalog_refresh`). A database that is briefly unavailable or locked is asked again, as the
    task's retries did."""
    entry = entry.model_copy(update={"flow_run_id": str(flow_run.id) if flow_run.id else None})
    for attempt in range(attempts):
        try:
            row_id = ledger.record(entry)
            break
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay_s)
    emit_asset_event(AssetOutcome(
        client=entry.client, source_uri=entry.source_uri, name=entry.source_uri, state=entry.state,  # type: ignore[arg-type]
        reason=entry.reason, source_key=entry.source_key, generation_key=entry.generation_key,
        published_url=entry.published_url, output_uris=entry.output_uris,
    ))
    return row_id


def emit_asset_event(outcome: AssetOutcome) -> None:
    """`brandforge.asset.<state>` on `brandforge.asset.<client>.<source key>` (ids and URIs only)."""
    emit_event(
        event=f"brandforge.asset.{outcome.state}",
        resource={
            "prefect.resource.id": f"brandforge.asset.{outcome.client}.{outcome.source_key or 'unknown'}",
            "brandforge.client": outcome.client,
        },
        payload={
            "source_uri": outcome.source_uri, "reason": outcome.reason, "generation_key": outcome.generation_key,
            "published_url": outcome.published_url, "outputs": outcome.output_uris,
        },
    )


def record_orchestration_failure(ledger: Ledger, asset: AssetRef, exc: BaseException) -> AssetOutcome:
    """An asset whose run could not even be orchestrated (e.g. the Prefect API answered 503):
    recorded straight in the ledger — not as a task, the API may be what failed — so it is not lost
    and the next run tries it again."""
    reason = f"orchestration: {type(exc).__name__}: {exc}"[:1000]
    try:
        ledger.record(LedgerEntry(client=asset.client, source_uri=asset.uri, state="failed", reason=reason))
    except Exception as record_exc:  # noqa: BLE001 - the outcome still reaches the summary
        reason += f" (and the ledger write failed: {record_exc})"
    return AssetOutcome(client=asset.client, source_uri=asset.uri, name=asset.name, state="failed", reason=reason)
