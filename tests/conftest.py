"""Shared fixtures: one Prefect test server for the whole session, and a demo client.

`prefect_test_harness` starts a real Prefect server (subprocess, temporary
SQLite) in about 13 s, so every test shares one. Tests that need no Prefect
call tasks through `.fn` or the pure helpers directly.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The fakes (providers, CMS, moto, certificate hosts) listen on 127.0.0.1: allow-listed explicitly, by
# that spelling only (the URL guard still refuses localhost, 0x7f000001, [::1] …; blocks/url_guard.py).
os.environ.setdefault("BRANDFORGE_URL_ALLOW", "127.0.0.1")
# The demo profile renders at 512 px in tests (1024 px in `make run`): a quarter of the pixels per catalog.
os.environ.setdefault("BRANDFORGE_DEMO_WIDTH", "512")

ROOT = Path(__file__).resolve().parent.parent
DEMO_CATALOG = ROOT / "demo" / "catalog"


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API for the session (started on first use only)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server on 127.0.0.1 (Debian's postgresql package), for the whole session.

    Yields its URL without a database; `ledger_url` makes a fresh database per test. Trust
    authentication: any password is accepted, so tests can give distinctive ones.
    """
    bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
    if bindir is None:
        pytest.skip("PostgreSQL is not installed: run `bash scripts/system-deps.sh` (installs Debian's postgresql)")
    user = "postgres" if os.geteuid() == 0 else None  # postgres refuses to run as root
    as_user = ["runuser", "-u", user, "--"] if user else []
    # Outside pytest's tmp tree: its parents are private to root, and postgres must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="bf-pg-"))
    if user:
        shutil.chown(root, user)
    data = root / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "brandforge", "--auth=trust"], check=True, capture_output=True)
    port = free_port()
    log = data.parent / "pg.log"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                    f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://brandforge@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_postgres_database(server_url: str) -> str:
    """A fresh, empty database on the test server; returns its URL."""
    import psycopg

    name = f"bf_{uuid.uuid4().hex[:12]}"
    dsn = server_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    """A fresh, empty ledger database: every ledger test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return new_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def demo_state(tmp_path: Path) -> Path:
    """A fresh state folder (ledger, jobs, work, gallery) for one test."""
    state = tmp_path / "state"
    state.mkdir()
    return state


@pytest.fixture
def demo_profile(demo_state: Path):
    """The demo ClientProfile pointing at a fresh state folder (not saved)."""
    from brandforge.deployments.demo import demo_profile as build

    return build(demo_state)


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 in server mode on 127.0.0.1 (a real HTTP endpoint for boto3 / prefect-aws).

    Yields a dict with `endpoint_url` and dummy credentials.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "region_name": "us-east-1",
        }
    finally:
        server.stop()


@pytest.fixture
def s3_bucket_block(moto_s3, tmp_path):
    """A fresh bucket on the moto server, as a prefect-aws `S3Bucket` block (not saved)."""
    import uuid

    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    creds = AwsCredentials(
        aws_access_key_id=moto_s3["aws_access_key_id"],
        aws_secret_access_key=moto_s3["aws_secret_access_key"],
        region_name=moto_s3["region_name"],
        aws_client_parameters=AwsClientParameters(endpoint_url=moto_s3["endpoint_url"]),
    )
    name = f"bf-{uuid.uuid4().hex[:12]}"
    creds.get_s3_client().create_bucket(Bucket=name)
    return S3Bucket(bucket_name=name, credentials=creds)


@pytest.fixture(scope="module")
def internal():
    """An "internal" server on 127.0.0.1 that counts every request (tests/fakes/internal.py)."""
    from tests.fakes.base import Served
    from tests.fakes.internal import InternalServer

    server = InternalServer()
    with Served(server.app) as served:
        server.url, server.port = served.url, served.port
        yield server
