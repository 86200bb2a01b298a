"""`make serve` (python -m brandforge.deployments.serve): the whole system from one command, stopped by Ctrl-C.

Starts it as a user would, in a subprocess on free ports with a fresh Prefect home:
its own Prefect server, the block types, the demo profile, every deployment and
the webhook gateway. The nightly demo deployment runs to completion, then SIGINT
stops everything.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from tests.conftest import ROOT, free_port


def read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def wait_for(lines: queue.Queue, text: str, seen: list[str], limit_s: float = 420) -> None:
    while True:
        try:
            line = lines.get(timeout=limit_s)
        except queue.Empty:
            pytest.fail(f"no {text!r} from serve; it printed:\n{''.join(seen)}")
        if line is None:
            pytest.fail(f"serve ended before {text!r}; it printed:\n{''.join(seen)}")
        seen.append(line)
        if text in line:
            return


def test_make_serve_starts_everything_and_ctrl_c_stops_it(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port, gateway_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "brandforge.deployments.serve", "--port", str(port), "--gateway-port", str(gateway_port),
         "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        wait_for(lines, "Ctrl-C stops everything", seen)
        ui = f"http://127.0.0.1:{port}"
        assert f"Prefect UI:       {ui}" in "".join(seen)
        assert httpx.get(f"{ui}/api/health", timeout=10).json() is True
        assert "<html" in httpx.get(ui, timeout=10, follow_redirects=True).text.lower()
        assert httpx.get(f"http://127.0.0.1:{gateway_port}/health", timeout=10).json()["status"] == "ok"

        with temporary_settings(updates={PREFECT_API_URL: f"{ui}/api"}):
            from brandforge.blocks.client_profile import ClientProfile

            profile = ClientProfile.load("demo")
            assert profile.source is not None and profile.source.basepath == str(ROOT / "demo" / "catalog")
            with get_client(sync_client=True) as client:
                names = {(client.read_flow(d.flow_id).name, d.name) for d in client.read_deployments()}
                slugs = {t.slug for t in client.read_block_types()}
            assert names == {("catalog-refresh", "nightly-demo"), ("process-asset", "on-new-asset")}
            assert {"brandforge-client-profile", "brandforge-local-engine", "brandforge-ledger"} <= slugs
            assert not {"image-provider", "image-refiner", "publish-target"} & slugs

            # The nightly schedule's deployment, run now: it succeeds as shipped.
            run = run_deployment("catalog-refresh/nightly-demo", timeout=600)
            assert run.state.is_completed(), run.state
            # The process-wide events worker was started against this server: stop it here, so the
            # next test's events go to that test's server, not to this one after it is gone.
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=30)
        assert (tmp_path / "state" / "gallery" / "index.html").exists()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0
        wait_for(lines, "brandforge serve: stopped.", seen)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{ui}/api/health", timeout=5)
    finally:
        if proc.poll() is None:  # a failed check: SIGTERM lets serve stop the Prefect server it started
            proc.terminate()
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
