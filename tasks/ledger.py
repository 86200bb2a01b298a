"""Ledger tasks: look up what is already done, and record how each asset ended."""

from __future__ import annotations

from prefect import task
from prefect.events import emit_event
from prefect.runtime import flow_run

from blocks.ledger import Ledger
from models import AssetOutcome, AssetRef, LedgerEntry


@task(name="check-ledger")
def find_finished(ledger: Ledger, client: str, source_key: str, recipe_key: str) -> LedgerEntry | None:
    return ledger.finished(client, source_key, recipe_key)


@task(name="record-outcome", retries=3, retry_delay_seconds=1)
def record_outcome(ledger: Ledger, entry: LedgerEntry) -> int:
    """Append the asset's row and announce its end as a Prefect event."""
    entry = entry.model_copy(update={"flow_run_id": str(flow_run.id) if flow_run.id else None})
    row_id = ledger.record(entry)
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
