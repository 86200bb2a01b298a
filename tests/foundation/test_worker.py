"""The work-pool worker (`make worker`) stops on SIGTERM even when started with SIGINT ignored.

A script that starts `prefect worker start … &` leaves the worker's SIGINT ignored; Prefect's worker turns
SIGTERM into a SIGINT to itself, so it would keep running. `deployments/worker.py` restores SIGINT first.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

import pytest

from brandforge.deployments.worker import worker_command
from tests.conftest import ROOT


def test_worker_command_defaults_to_the_brandforge_process_pool():
    assert worker_command([])[-6:] == ["worker", "start", "--pool", "brandforge", "--type", "process"]
    assert worker_command(["--pool", "acme", "--limit", "2"])[-7:] == ["start", "--pool", "acme", "--limit", "2", "--type", "process"]
    assert worker_command(["-p", "acme", "-t", "process"]).count("--pool") == 0


def test_worker_stops_on_sigterm_when_started_with_sigint_ignored(prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "brandforge.deployments.worker", "--pool", "bf-sigterm-test"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as `cmd &` in a script leaves it
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] and None, daemon=True).start()
    seen = []
    try:
        while not any("started!" in line for line in seen):
            try:
                seen.append(lines.get(timeout=180))
            except queue.Empty:
                pytest.fail(f"the worker did not start: {''.join(seen)}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
