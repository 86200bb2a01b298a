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
