"""Flow runs of dead processes: marked Crashed when their work is taken over.

A process killed with SIGKILL cannot report its end, so its `process-asset`
run, and the `catalog-refresh` run above it, stay "Running" forever (issue 11
counted 23 after 19 kills). Prefect's own remedy (run heartbeats and a zombie
automation) needs deployments run by a worker. The ledger's job journal knows
better and costs nothing more: when a rerun resumes a job the journal holds for
another flow run, that run was not waiting on it any more, so it and its parents
still Running are set Crashed, naming the run that took over. The smallest thing
that closes the gap for runs with a paid job in flight.

A run killed before any submission holds no job to resume; for those, each
catalog run records its process on its flow run (`host:pid`, as Prefect's
process worker does) and, when it starts, sets Crashed the client's earlier runs
still Running whose process on this machine is gone (`sweep_dead_runs`). Runs
of other machines are left to Prefect.
"""

from __future__ import annotations

import logging
import os
import socket
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


# --------------------------------------------------------------------------- runs whose process is gone

def this_process() -> str:
    """How a run records its process: `host:pid`, the form Prefect's process worker uses."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_gone(infrastructure_pid: str | None) -> bool:
    """True only when the recorded process was on this machine and no longer exists; anything
    else (another machine, another worker's infrastructure id, a pid taken again) counts as alive."""
    host, _, pid = (infrastructure_pid or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def sweep_dead_runs(flow_run_id: str | None, flow_name: str, client_id: str) -> list[str]:
    """Record this process on the run `flow_run_id` (when it has no infrastructure id: a direct call,
    not a worker's run), then set Crashed every other Running run of `flow_name` for `client_id`
    whose recorded process on this machine is gone: a catalog run SIGKILLed before it submitted a
    job, which `crash_abandoned_run` never hears of. Returns the ids changed; never raises."""
    if not flow_run_id:
        return []
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    crashed: list[str] = []
    try:
        with get_client(sync_client=True) as client:
            me = UUID(flow_run_id)
            if not client.read_flow_run(me).infrastructure_pid:
                client.update_flow_run(me, infrastructure_pid=this_process())
            running = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))),
                limit=200)
            for run in running:
                if run.id == me or (run.parameters or {}).get("client") != client_id or not process_gone(run.infrastructure_pid):
                    continue
                client.set_flow_run_state(run.id, Crashed(
                    message=f"its process ({run.infrastructure_pid}) is gone; found by flow run {flow_run_id}"), force=True)
                crashed.append(str(run.id))
    except Exception as exc:  # noqa: BLE001 - bookkeeping only: the catalog goes on regardless
        logger.warning("could not sweep dead %s runs: %s", flow_name, exc)
    if crashed:
        logger.info("%d %s run(s) of %s whose process died set Crashed", len(crashed), flow_name, client_id)
    return crashed
