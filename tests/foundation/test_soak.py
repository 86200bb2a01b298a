"""Proof under faults, small: `bench/soak.py` at 12 assets and 2 SIGKILLs, and the sweep of dead runs it needs.

The soak drives `catalog_refresh` in child processes against the Replicate fake
(5xx, 429 with Retry-After, timeouts, lost / duplicated / forged webhooks through
the gateway, corrupt outputs) and the Strapi fake (5xx, some after storing),
kills each run at a random point and reruns it. Every asset must end with a
final state, nothing is posted twice, every billed job is in the ledger's
journal and no generation is paid twice, and no flow run stays Running.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from bench.soak import soak
from brandforge.tasks.abandoned_runs import process_gone, sweep_dead_runs, this_process

pytestmark = pytest.mark.usefixtures("prefect_server")


# At 12 assets the soak's 2–3% faults would mostly not happen: the cheap ones (no long hangs) are raised.
SMALL_N_FAULTS = dict(webhook_lost_rate=0.15, webhook_duplicate_rate=0.15, webhook_forged_rate=0.15, corrupt_rate=0.1)


def test_small_soak_keeps_every_invariant(tmp_path):
    report = soak(tmp_path, n=12, kills=2, seed=7, latency=0.5, faults=SMALL_N_FAULTS)
    print("\n".join(report.lines()))
    assert report.kills == 2
    assert not report.lost and sum(report.states.values()) == 12
    assert report.cms_duplicates == 0 and report.cms_entries == report.states.get("published", 0)
    assert report.billed == report.journalled and not report.billed_not_journalled and not report.journalled_not_billed
    assert report.billed_twice == 0
    assert report.left_running == 0 and report.runs.get("COMPLETED", 0) >= 1
    assert report.problems() == []


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_process_gone_only_for_a_dead_process_of_this_machine():
    host = socket.gethostname()
    assert process_gone(f"{host}:{dead_pid()}")
    assert not process_gone(this_process())
    assert not process_gone(f"another-host:{dead_pid()}")
    assert not process_gone("cluster-uid:namespace:job-name") and not process_gone(None)


def test_sweep_crashes_the_clients_running_runs_whose_process_died():
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    @flow(name="sweep-test-flow")
    def noop(client: str) -> None:
        return None

    host = socket.gethostname()
    with get_client(sync_client=True) as api:
        def run(client: str, pid: str | None):
            created = api.create_flow_run(noop, parameters={"client": client}, state=Running())
            if pid:
                api.update_flow_run(created.id, infrastructure_pid=pid)
            return created.id

        me = run("acme", None)
        dead = run("acme", f"{host}:{dead_pid()}")
        alive = run("acme", this_process())
        elsewhere = run("acme", f"another-host:{dead_pid()}")
        other_client = run("globex", f"{host}:{dead_pid()}")

        assert sweep_dead_runs(str(me), "sweep-test-flow", "acme") == [str(dead)]
        states = {name: api.read_flow_run(i).state.type.value
                  for name, i in [("me", me), ("dead", dead), ("alive", alive), ("elsewhere", elsewhere), ("other", other_client)]}
        assert states == {"me": "RUNNING", "dead": "CRASHED", "alive": "RUNNING", "elsewhere": "RUNNING", "other": "RUNNING"}
        assert api.read_flow_run(me).infrastructure_pid == this_process()  # the sweeping run is on record itself
