"""How a run that processed assets ends in the Prefect UI: never a clean green when assets failed.

`final_state` is shared by `catalog_refresh` (a whole catalog) and by `process_asset` when it runs
as the on-new-asset deployment (one asset, from an event): the final state's message gives the
counts (and, for one asset, how it ended); the run is `Failed` when every asset failed; and when
any asset failed, `brandforge.catalog.degraded` is emitted for automations.
"""

from __future__ import annotations

from typing import Any

from prefect.states import Completed, Failed, State

from brandforge.models import CATALOG_DEGRADED_EVENT, AssetOutcome, CatalogSummary

STATES = ("published", "skipped", "quarantined", "review", "withdrawn", "failed")
MAX_DETAIL_CHARS = 300


def counts_message(summary: CatalogSummary) -> str:
    return ", ".join(f"{summary.counts[s]} {s}" for s in STATES if summary.counts.get(s)) or "no assets"


def final_state(summary: CatalogSummary, run_id: str | None = None, *, detail: str = "", result: Any = None) -> State:
    """The run's final state: Completed with the counts; Failed when every asset failed; and, when any
    asset failed, a `brandforge.catalog.degraded` event (ids and counts only). `detail` is added to the
    message; `result` is the run's result (default: the summary)."""
    failed = summary.counts.get("failed", 0)
    message = f"{summary.client}: {counts_message(summary)}" + (f" — {detail[:MAX_DETAIL_CHARS]}" if detail else "")
    data = summary if result is None else result
    if failed:
        from prefect.events import emit_event

        emit_event(
            event=CATALOG_DEGRADED_EVENT,
            resource={"prefect.resource.id": f"brandforge.catalog.{summary.client}", "brandforge.client": summary.client},
            payload={"counts": summary.counts, "total": summary.total, "flow_run_id": run_id,
                     "failed": [o.name for o in summary.outcomes if o.state == "failed"][:50]},
        )
    if failed and failed == summary.total:
        return Failed(message=f"every asset failed — {message}", data=data)
    return Completed(message=message + (f" ({failed} need attention)" if failed else ""), data=data)


def asset_final_state(outcome: AssetOutcome, run_id: str | None = None) -> State:
    """`final_state` of a one-asset run: the message says how the asset ended; Failed when it failed;
    the run's result stays the AssetOutcome."""
    summary = CatalogSummary(client=outcome.client, counts={outcome.state: 1}, outcomes=[outcome],
                             seconds=outcome.seconds, cost_usd=outcome.cost_usd)
    return final_state(summary, run_id, detail=f"{outcome.name}: {outcome.label}", result=outcome)
