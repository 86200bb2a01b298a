"""Every brandforge deployment, its schedule and its triggers, served from one process.

    make serve                             # or: python -m brandforge.deployments.serve [--port 4200]
    python -m brandforge.deployments.serve --no-server  # against the server in $PREFECT_API_URL
    prefect deploy --all                   # the same deployments on a work pool (prefect.yaml)

`make serve` is the whole system on one machine, from a fresh clone: it starts
a local Prefect server (unless `$PREFECT_API_URL` names one), registers
brandforge's block types, saves the demo client's profile (its source: the demo
catalog folder), serves every deployment below and starts the webhook gateway,
then prints where the UI is. Ctrl-C (or SIGTERM) stops all of it.

- `catalog-refresh/nightly-<client>`: each client's whole catalog at 02:00 UTC
  (clients from `BRANDFORGE_NIGHTLY_CLIENTS`, comma-separated; default `demo`).
- `process-asset/on-new-asset`: one asset, whenever the webhook gateway (S3
  notification, CMS hook) emits `brandforge.asset.created`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from abc import ABC
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import httpx
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import TerminationSignal
from prefect.runner import Runner

from brandforge.flows.catalog_refresh import catalog_refresh
from brandforge.flows.process_asset import process_asset

NIGHTLY_CRON = "0 2 * * *"
ROOT = Path(__file__).resolve().parent.parent


def on_new_asset_trigger() -> DeploymentEventTrigger:
    """Run process_asset for each `brandforge.asset.created` event, with the asset from its payload."""
    return DeploymentEventTrigger(
        name="on-new-asset",
        expect={"brandforge.asset.created"},
        match={"prefect.resource.id": "brandforge.asset.*"},
        parameters={
            "asset": {
                "client": "{{ event.resource['brandforge.client'] }}",
                "uri": "{{ event.payload.uri }}",
                "name": "{{ event.payload.name }}",
                # A CMS entry travels as the asset's record (AssetRef maps its fields); none: an empty one.
                "record": "{{ (event.payload.record or {}) }}",
            }
        },
    )


def nightly_clients() -> list[str]:
    return [c.strip() for c in os.environ.get("BRANDFORGE_NIGHTLY_CLIENTS", "demo").split(",") if c.strip()]


def build_deployments(work_dir: str | None = None) -> list[RunnerDeployment]:
    """The deployments; `work_dir` (the state folder's `work`, where previews are served from) for the nightly runs."""
    params = {"work_dir": work_dir} if work_dir else {}
    nightly = [
        catalog_refresh.to_deployment(
            name=f"nightly-{client}", cron=NIGHTLY_CRON, parameters={"client": client, **params},
            description=f"Nightly catalog refresh for {client}.", tags=["brandforge", client],
        )
        for client in nightly_clients()
    ]
    on_new_asset = process_asset.to_deployment(
        name="on-new-asset", triggers=[on_new_asset_trigger()],
        parameters={**params, "fail_run_on_failure": True},  # a failed asset shows as a Failed run, with its reason
        description="One new asset, from a brandforge.asset.created event.", tags=["brandforge"],
    )
    return [*nightly, on_new_asset]


# --------------------------------------------------------------------------- the pieces `make serve` starts


class ServeError(RuntimeError):
    """Something `make serve` needs did not come up; the message says what and where its log is."""


@contextmanager
def prefect_server(host: str, port: int, log_path: Path, startup_s: float = 300.0, env: dict[str, str] | None = None) -> Iterator[str]:
    """A `prefect server start` subprocess (its own process group) until the block exits; yields the API URL.
    `env` adds settings (e.g. `PREFECT_API_DATABASE_CONNECTION_URL`, deployments/fleet.py)."""
    api = f"http://{host}:{port}/api"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The UI in the browser calls the API at PREFECT_SERVER_UI_API_URL, which otherwise defaults to port 4200
    # whatever --port says: on any other port the UI would load and then fail to reach its own API.
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_API_URL": api, **(env or {})}
    env.pop("PREFECT_API_URL", None)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise ServeError(f"the Prefect server exited with code {proc.returncode} before answering; see {log_path} "
                                 f"(is port {port} taken? choose another with --port)")
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServeError(f"the Prefect server did not answer at {api} within {startup_s:.0f} s; see {log_path}")
            time.sleep(0.5)
        yield api
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def flush_to_api(timeout_s: float = 10.0) -> None:
    """Send the logs and events still queued for the API while the server is up: once it is gone, Prefect's
    exit handlers would retry them for over a minute and keep the process alive after 'stopped'."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout_s)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def register_block_types() -> list[str]:
    """Register every concrete brandforge block type (what `prefect block register -m brandforge.blocks` does)."""
    import brandforge.blocks as blocks

    names = []
    for name in blocks.__all__:
        cls = getattr(blocks, name)
        if ABC in cls.__bases__:  # the abstract bases are not block types
            continue
        cls.register_type_and_schema()
        names.append(cls.get_block_type_name())
    return names


def save_demo_profile(state_dir: Path) -> None:
    from brandforge.deployments.demo import DEMO, demo_profile

    demo_profile(state_dir, catalog=DEMO / "catalog").save("demo", overwrite=True)


@contextmanager
def gateway(host: str, port: int) -> Iterator[str]:
    """The webhook gateway (deployments/gateway.py) on a uvicorn server in a thread; yields its base URL."""
    import uvicorn

    from brandforge.deployments.gateway import app_from_env

    server = uvicorn.Server(uvicorn.Config(app_from_env(), host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="brandforge-gateway", daemon=True)
    thread.start()
    base = f"http://{host}:{port}"
    while not server.started:
        if not thread.is_alive():
            raise ServeError(f"the webhook gateway did not start on {base} (is the port taken? choose another with --gateway-port)")
        time.sleep(0.1)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address the Prefect server and the gateway listen on")
    parser.add_argument("--port", type=int, default=4200, help="Prefect server (UI and API) port")
    parser.add_argument("--gateway-port", type=int, default=8700, help="webhook gateway port")
    parser.add_argument("--state-dir", default=str(ROOT / ".brandforge"), help="demo ledger, jobs, work, gallery and server log")
    parser.add_argument("--no-server", action="store_true", help="use the Prefect server in $PREFECT_API_URL instead of starting one")
    args = parser.parse_args(argv)
    state = Path(args.state_dir).resolve()
    # The flow runs, the gateway and the preview secret share this state folder (tasks/previews.py).
    os.environ["BRANDFORGE_STATE_DIR"] = str(state)

    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Ctrl-C and SIGTERM end the same way: the runner stops its runs, then everything started here stops
    # (SIGINT is set explicitly: a shell starting us in the background leaves it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with ExitStack() as stack:
            if args.no_server:
                api = PREFECT_API_URL.value()
                if not api:
                    raise ServeError("--no-server needs $PREFECT_API_URL (the API of a running Prefect server)")
            else:
                print(f"Starting a Prefect server on {args.host}:{args.port} (log: {state / 'prefect-server.log'}) …", flush=True)
                api = stack.enter_context(prefect_server(args.host, args.port, state / "prefect-server.log"))
            # The flow runs the runner starts are subprocesses: they read the API from the environment.
            os.environ["PREFECT_API_URL"] = api
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api}))
            stack.callback(flush_to_api)  # runs before the server stops (the stack unwinds last-in first-out)
            registered = register_block_types()
            save_demo_profile(state)
            gateway_url = stack.enter_context(gateway(args.host, args.gateway_port))
            # Flow runs sign preview links to this gateway for files under this state folder (tasks/previews.py).
            os.environ.setdefault("BRANDFORGE_PUBLIC_URL", gateway_url)
            deployments = build_deployments(work_dir=str(state / "work"))
            # What prefect.serve does, with the deployments applied before the banner says they exist;
            # schedules stay active when serve stops (the next start serves them again).
            runner = Runner(pause_on_shutdown=False)
            for deployment in deployments:
                runner.add_deployment(deployment)
            ui = api.removesuffix("/api")
            print(f"\nbrandforge is up.\n"
                  f"  Prefect UI:       {ui}\n"
                  f"  webhook gateway:  {gateway_url}  (POST /webhooks/<provider>, POST /assets/<client>)\n"
                  f"  block types:      {len(registered)} registered; client profile 'demo' saved (source: demo/catalog)\n"
                  f"  deployments:      {', '.join(f'{d.flow_name}/{d.name}' for d in deployments)}\n"
                  f"Run the demo catalog now: Deployments → catalog-refresh/nightly-demo → Run.  Ctrl-C stops everything.\n",
                  flush=True)
            asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        pass
    except ServeError as exc:
        print(f"brandforge serve: {exc}", file=sys.stderr)
        return 1
    print("brandforge serve: stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
