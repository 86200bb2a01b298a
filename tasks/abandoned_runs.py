"""Flow runs of dead processes: marked Crashed when their work is taken over.

A process killed with SIGKILL cannot report its end, so its `process-asset`
run, and the `catalog-refresh` run above it, stay "Running" forever (issue 11
counted 23 after 19 kills). Prefect's own remedy (run heartbeats and a zombie
automation) needs deployments run by a worker. The ledger's job journal knows
better and costs nothing more: when a rerun resumes a job the journal holds for
another flow run, that run was not waiting on it any more, so it and its parents
still Running are set Crashed, naming the run that took over. The smallest thing
that closes the gap for runs with a paid job in flight; runs killed before any
submission are left to Prefect.
"""

from __future__ import annotations

import logging
from uuid import UUID

logger = logging.getLogger("brandforge.generate")


async def crash_abandoned_run(flow_run_id: str | None, taken_over_by: str | None) -> list[str]:
    """Set `flow_run_id` and its Running parents Crashed; returns the ids changed. Never raises."""
    if not flow_run_id or flow_run_id == taken_over_by:
        return []
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    crashed: list[str] = []
    try:
        async with get_client() as client:
            run_id: UUID | None = UUID(flow_run_id)
            while run_id is not None and str(run_id) != taken_over_by:
                run = await client.read_flow_run(run_id)
                if run.state is None or run.state.type.value != "RUNNING":
                    break
                await client.set_flow_run_state(run_id, Crashed(
                    message=f"its process died; its provider job was resumed by flow run {taken_over_by}"), force=True)
                crashed.append(str(run_id))
                parent = await client.read_task_run(run.parent_task_run_id) if run.parent_task_run_id else None
                run_id = parent.flow_run_id if parent else None
    except Exception as exc:  # noqa: BLE001 - bookkeeping only: the resumed job goes on regardless
        logger.warning("could not mark flow run %s crashed: %s", flow_run_id, exc)
    return crashed
