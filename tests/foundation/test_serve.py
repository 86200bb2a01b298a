"""`make serve` (python -m brandforge.deployments.serve): the whole system from one command, stopped by Ctrl-C.

Starts it as a user would, in a subprocess on free ports with a fresh Prefect home:
its own Prefect server, the block types, the demo profile, every deployment and
the webhook gateway. The nightly demo deployment runs to completion (its gate
report's thumbnails are signed links the gateway serves), then SIGINT stops
everything; SIGTERM with a run in flight does too. Either way no process it
started is left behind.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

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


def _parents() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, theirs, …), from /proc."""
    parents, found, todo = _parents(), [], [pid]
    while todo:
        pid = todo.pop()
        kids = [child for child, parent in parents.items() if parent == pid]
        found += kids
        todo += kids
    return found


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (OSError, IndexError):
        return False


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def start_serve(tmp_path) -> tuple[subprocess.Popen, queue.Queue, int, int]:
    port, gateway_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "BRANDFORGE_PUBLIC_URL")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "brandforge.deployments.serve", "--port", str(port), "--gateway-port", str(gateway_port),
         "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    return proc, lines, port, gateway_port


def stop_if_running(proc: subprocess.Popen, started: list[int]) -> None:
    if proc.poll() is None:  # a failed check: SIGTERM lets serve stop the Prefect server it started
        proc.terminate()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for pid in started:  # never leave a test's server behind, even when serve did
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def gate_report_previews(client, flow_run_id) -> list[str]:
    """The preview links in a catalog run's gate report artifact."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    report = next(a for a in artifacts if a.key and a.key.endswith("gate-report"))
    return re.findall(r"\]\((http://[^)\s]+/preview\?[^)\s]+)\)", report.data)


def test_make_serve_starts_everything_and_ctrl_c_stops_it(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    proc, lines, port, gateway_port = start_serve(tmp_path)
    seen: list[str] = []
    started: list[int] = []
    try:
        wait_for(lines, "Ctrl-C stops everything", seen)
        ui = f"http://127.0.0.1:{port}"
        assert f"Prefect UI:       {ui}" in "".join(seen)
        assert httpx.get(f"{ui}/api/health", timeout=10).json() is True
        assert "<html" in httpx.get(ui, timeout=10, follow_redirects=True).text.lower()
        # The UI in a browser calls this server's API (not port 4200's).
        assert httpx.get(f"{ui}/ui-settings", timeout=10).json()["api_url"] == f"{ui}/api"
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
            # The gate report shows each image through a signed link to this gateway, which serves it.
            with get_client(sync_client=True) as client:
                links = gate_report_previews(client, run.id)
            assert links and all(u.startswith(f"http://127.0.0.1:{gateway_port}/preview?") for u in links)
            thumb = httpx.get(links[0].replace("&amp;", "&"), timeout=30)
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
            assert httpx.get(links[0].replace("sig=", "sig=0"), timeout=30).status_code == 403
            # The process-wide events worker was started against this server: stop it here, so the
            # next test's events go to that test's server, not to this one after it is gone.
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=30)
        assert (tmp_path / "state" / "gallery" / "index.html").exists()

        started = descendants(proc.pid)
        assert any("prefect server start" in command(pid) for pid in started)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0
        wait_for(lines, "brandforge serve: stopped.", seen)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{ui}/api/health", timeout=5)
        assert [command(pid) for pid in started if alive(pid)] == []
    finally:
        stop_if_running(proc, started)


def test_sigterm_stops_serve_and_its_flow_runs(tmp_path):
    """What a process manager sends (systemd, Docker, Kubernetes): the runner cancels the run in flight, the
    gateway and the Prefect server stop, the process exits 0 and leaves no process behind."""
    import time

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    proc, lines, port, _ = start_serve(tmp_path)
    seen: list[str] = []
    started: list[int] = []
    try:
        wait_for(lines, "Ctrl-C stops everything", seen)
        with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
            run_deployment("catalog-refresh/nightly-demo", timeout=0)
            from prefect.events.worker import EventsWorker

            EventsWorker.drain_all(timeout=30)
        deadline = time.monotonic() + 300
        while not any("prefect.engine" in command(pid) for pid in descendants(proc.pid)):  # the run's process
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            time.sleep(0.2)
        started = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0
        wait_for(lines, "brandforge serve: stopped.", seen)
        assert [command(pid) for pid in started if alive(pid)] == []
    finally:
        stop_if_running(proc, started)
