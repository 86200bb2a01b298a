"""Shared fixtures: one Prefect test server for the whole session, and a demo client.

`prefect_test_harness` starts a real Prefect server (subprocess, temporary
SQLite) in about 13 s, so every test shares one. Tests that need no Prefect
call tasks through `.fn` or the pure helpers directly.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

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


@pytest.fixture
def demo_state(tmp_path: Path) -> Path:
    """A fresh state folder (ledger, jobs, work, gallery) for one test."""
    state = tmp_path / "state"
    state.mkdir()
    return state


@pytest.fixture
def demo_profile(demo_state: Path):
    """The demo ClientProfile pointing at a fresh state folder (not saved)."""
    from deployments.demo import demo_profile as build

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
