"""A fleet on one machine: PostgreSQL, a Prefect server on it, a process work pool and N workers.

    python -m brandforge.deployments.fleet --workers 2          # or: bash scripts/fleet-up.sh --workers 2

Starts Debian's PostgreSQL (initdb into the state folder, 127.0.0.1, a free port), a Prefect server whose
database is that PostgreSQL (asyncpg), the process work pool `fleet`, N `prefect worker start` processes on
it, and deploys `catalog-chunk/fleet` (the slice runner `catalog_refresh(chunks=…)` starts, flows/catalog_chunk.py)
and `catalog-refresh/fleet-demo` (the demo catalog in 2×N chunks) from this checkout — no image. The demo
client's ledger is a database on the same PostgreSQL, so every worker reserves budgets and journals jobs
in one place. An automation marks a run whose heartbeats stop (its worker died) Crashed, so the catalog
starts that slice again. Ctrl-C or SIGTERM stops everything, workers first.

The same layout on Kubernetes or ECS: README, "Scaling out".
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Iterator

from brandforge.deployments.serve import ServeError, prefect_server, register_block_types, stop_process_group

ROOT = Path(__file__).resolve().parent.parent
POOL = "fleet"
CHUNK_DEPLOYMENT_NAME = "fleet"
ZOMBIE_AUTOMATION = "brandforge: crash runs whose heartbeats stopped"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path | None:
    return next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


@contextmanager
def local_postgres(root: Path | None = None, port: int | None = None) -> Iterator[str]:
    """Debian's PostgreSQL in `root` (a fresh temporary folder by default) on 127.0.0.1 until the block exits;
    yields its URL without a database (`postgresql+psycopg://brandforge@127.0.0.1:PORT`). Trust auth, local only."""
    bindir = postgres_bindir()
    if bindir is None:
        raise ServeError("PostgreSQL is not installed: run `bash scripts/system-deps.sh` (installs Debian's postgresql)")
    user = "postgres" if os.geteuid() == 0 else None  # postgres refuses to run as root
    as_user = ["runuser", "-u", user, "--"] if user else []
    # Outside private trees (pytest's tmp, /root): postgres must reach its folder.
    owned = root is None
    root = Path(tempfile.mkdtemp(prefix="bf-pg-")) if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    if user:
        shutil.chown(root, user)
    data = root / "data"
    if not (data / "PG_VERSION").exists():
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "brandforge", "--auth=trust"], check=True, capture_output=True)
    port = port or free_port()
    log = root / "pg.log"
    started = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                              f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300", "start"],
                             capture_output=True, text=True)
    if started.returncode:
        raise ServeError(f"PostgreSQL did not start on port {port}: {started.stderr.strip()} (log: {log})")
    try:
        yield f"postgresql+psycopg://brandforge@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, name: str | None = None) -> str:
    """A database on the server (created when missing); returns its URL."""
    import psycopg

    name = name or f"bf_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"


def asyncpg_url(url: str) -> str:
    """The URL the Prefect server takes (`postgresql+asyncpg://`); it needs asyncpg importable."""
    try:
        import asyncpg  # noqa: F401
    except ImportError as exc:
        raise ServeError("the Prefect server needs asyncpg for PostgreSQL: `pip install asyncpg`") from exc
    return url.replace("postgresql+psycopg://", "postgresql+asyncpg://")


# --------------------------------------------------------------------------- work pool, workers, deployments


def worker_env(api: str, storage: Path, heartbeat_s: int = 30) -> dict[str, str]:
    """What a worker (and the flow-run processes it starts) needs: the API, this checkout on the path, flow-run
    heartbeats (a silent run is a dead one), a fast poll, and result storage shared with the catalog's process."""
    return {
        **os.environ, "PREFECT_API_URL": api, "BRANDFORGE_HOME": str(ROOT),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_s), "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "10", "PREFECT_LOCAL_STORAGE_PATH": str(storage), "PYTHONUNBUFFERED": "1",
    }


def start_worker(pool: str, name: str, limit: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`prefect worker start` (its own process group: stopping it stops what it runs)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
                                 "--name", name, "--limit", str(limit)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)


def ensure_pool(pool: str = POOL) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            pass


def deploy(pool: str = POOL, catalog_clients: tuple[str, ...] = (), chunks: int = 4) -> list[str]:
    """`catalog-chunk/fleet` on the pool, and `catalog-refresh/fleet-<client>` (its catalog in `chunks` slices) for
    each client; both run from this checkout (a process pool: the workers' machine has it)."""
    from prefect import Flow

    names = []
    chunk = Flow.from_source(str(ROOT), "flows/catalog_chunk.py:catalog_chunk")
    chunk.deploy(name=CHUNK_DEPLOYMENT_NAME, work_pool_name=pool, build=False, push=False, print_next_steps=False,
                 description="One slice of a catalog, started by catalog_refresh(chunks=…).", tags=["brandforge", "fleet"])
    names.append(f"catalog-chunk/{CHUNK_DEPLOYMENT_NAME}")
    for client in catalog_clients:
        refresh = Flow.from_source(str(ROOT), "flows/catalog_refresh.py:catalog_refresh")
        refresh.deploy(name=f"fleet-{client}", work_pool_name=pool, build=False, push=False, print_next_steps=False,
                       parameters={"client": client, "chunks": chunks}, tags=["brandforge", "fleet", client],
                       description=f"{client}'s catalog in {chunks} slices over the pool's workers.")
        names.append(f"catalog-refresh/fleet-{client}")
    return names


def crash_silent_runs(within_s: int) -> None:
    """An automation: a fleet run (tag `fleet`) with no heartbeat for `within_s` seconds (its worker or machine
    died; keep it ≥ 2.5 × the workers' heartbeat period) is marked Crashed — Prefect's documented zombie detection — so the catalog waiting on it starts its slice again."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    try:
        Automation.read(name=ZOMBIE_AUTOMATION)
        return
    except ValueError:
        pass
    Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": ["prefect.flow-run.*"]}, for_each={"prefect.resource.id"},
            # Only the fleet's runs (their heartbeat period is set on the workers; other runs beat every 180 s).
            match_related={"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.fleet"},
            posture=Posture.Proactive, threshold=1, within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {within_s} s: its worker is gone")],
    ).create()


@dataclass
class Fleet:
    api: str
    pool: str
    env: dict[str, str]
    state: Path
    limit: int
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def add_worker(self, name: str | None = None) -> str:
        name = name or f"worker-{len(self.workers) + 1}"
        self.workers[name] = start_worker(self.pool, name, self.limit, self.env, self.state / f"{name}.log")
        return name

    def stop(self) -> None:
        for proc in self.workers.values():
            stop_process_group(proc)


@contextmanager
def fleet(database_url: str, state: Path, workers: int = 2, limit: int = 4, pool: str = POOL, host: str = "127.0.0.1",
          port: int | None = None, heartbeat_s: int = 30, crash_after_s: int = 90,
          worker_settings: dict[str, str] | None = None) -> Iterator[Fleet]:
    """A Prefect server on `database_url` (PostgreSQL), the pool, `workers` workers and the chunk deployment,
    until the block exits. The calling process talks to that server (PREFECT_API_URL) while inside it.
    `worker_settings` are extra environment variables for the workers and their flow runs."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    state.mkdir(parents=True, exist_ok=True)
    storage = state / "results"
    with ExitStack() as stack:
        api = stack.enter_context(prefect_server(host, port or free_port(), state / "prefect-server.log",
                                                 env={"PREFECT_API_DATABASE_CONNECTION_URL": asyncpg_url(database_url)}))
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api, PREFECT_LOCAL_STORAGE_PATH: storage}))
        ensure_pool(pool)
        crash_silent_runs(crash_after_s)
        deploy(pool)
        crew = Fleet(api=api, pool=pool, env={**worker_env(api, storage, heartbeat_s), **(worker_settings or {})},
                     state=state, limit=limit)
        stack.callback(crew.stop)
        for _ in range(workers):
            crew.add_worker()
        yield crew


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="process workers on the pool")
    parser.add_argument("--limit", type=int, default=4, help="flow runs at once per worker")
    parser.add_argument("--chunks", type=int, default=None, help="slices of the demo catalog (default 2 × workers)")
    parser.add_argument("--port", type=int, default=4200, help="Prefect server (UI and API) port")
    parser.add_argument("--state-dir", default=str(ROOT / ".brandforge" / "fleet"), help="PostgreSQL data, logs, demo state")
    args = parser.parse_args(argv)
    state = Path(args.state_dir).resolve()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with ExitStack() as stack:
            print(f"Starting PostgreSQL in {state / 'postgres'} …", flush=True)
            server = stack.enter_context(local_postgres(state / "postgres"))
            prefect_db, ledger_db = create_database(server, "prefect"), create_database(server, "ledger")
            print(f"Starting a Prefect server on {prefect_db} and {args.workers} worker(s) …", flush=True)
            crew = stack.enter_context(fleet(prefect_db, state, workers=args.workers, limit=args.limit, port=args.port))
            os.environ["PREFECT_API_URL"] = crew.api
            register_block_types()
            from brandforge.blocks.ledger import Ledger
            from brandforge.deployments.demo import DEMO, demo_profile

            profile = demo_profile(state / "demo", catalog=DEMO / "catalog")
            profile.ledger = Ledger(url=ledger_db)
            profile.save("demo", overwrite=True)
            names = deploy(crew.pool, ("demo",), args.chunks or 2 * args.workers)
            print(f"\nbrandforge fleet is up.\n"
                  f"  Prefect UI:   {crew.api.removesuffix('/api')}   (database: {prefect_db})\n"
                  f"  work pool:    {crew.pool}, workers: {', '.join(crew.workers)} (logs in {state})\n"
                  f"  ledger:       {ledger_db}\n"
                  f"  deployments:  {', '.join(names)}\n"
                  f"Run: prefect deployment run catalog-refresh/fleet-demo  (PREFECT_API_URL={crew.api}).  "
                  f"Ctrl-C stops everything.\n", flush=True)
            while True:
                for name, proc in crew.workers.items():
                    if proc.poll() is not None:
                        print(f"worker {name} exited ({proc.returncode}); starting it again", flush=True)
                        crew.add_worker(name)
                time.sleep(2)
    except KeyboardInterrupt:
        pass
    except ServeError as exc:
        print(f"brandforge fleet: {exc}", file=sys.stderr)
        return 1
    print("brandforge fleet: stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
