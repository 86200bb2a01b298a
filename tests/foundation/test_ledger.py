"""The ledger: append-only rows, idempotency lookups and spend — on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from blocks.ledger import Ledger
from models import LedgerEntry
from tests.conftest import free_port


def entry(**kw) -> LedgerEntry:
    base = dict(client="acme", source_uri="file:///a.png", source_key="s1", recipe_key="r1", generation_key="g1", state="published", cost_usd=0.04)
    return LedgerEntry(**{**base, **kw})


def exercise(ledger: Ledger) -> None:
    assert ledger.finished("acme", "s1", "r1") is None
    ledger.record(entry(state="failed", reason="generate: timeout", cost_usd=0.0))
    assert ledger.finished("acme", "s1", "r1") is None  # failure is not final
    ledger.record(entry(job_ids=["j1"], scores={"variant-0": {"sharpness": 80.5}}, published_url="https://cms/1"))
    done = ledger.finished("acme", "s1", "r1")
    assert done and done.state == "published" and done.job_ids == ["j1"] and done.scores["variant-0"]["sharpness"] == 80.5
    assert ledger.finished("acme", "s1", "r2") is None  # another recipe is another decision
    assert ledger.published_for_generation("g1").published_url == "https://cms/1"
    ledger.record(entry(source_key="s2", generation_key="g2", state="quarantined", reason="sharpness 3.0"))
    assert ledger.finished("acme", "s2", "r1").reason == "sharpness 3.0"
    assert ledger.spent("acme") == pytest.approx(0.08)
    assert ledger.spent("other") == 0.0
    assert len(ledger.entries(client="acme")) == 3
    assert len(ledger.entries(client="acme", state="failed")) == 1
    assert ledger.entries(since=datetime.now(timezone.utc) + timedelta(hours=1)) == []
    # Many workers writing at once lose nothing.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: ledger.record(entry(source_key=f"c{i}", generation_key=f"gc{i}")), range(40)))
    assert len(ledger.entries(client="acme")) == 43


def test_state_must_be_known():
    with pytest.raises(ValueError, match="state must be one of published, quarantined, failed"):
        entry(state="done")


def test_sqlite_ledger(tmp_path):
    exercise(Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}"))


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (Debian's postgresql package)."""
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
                    f"-p {port} -k {data.parent} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://brandforge@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_ledger(postgres_url):
    exercise(Ledger(url=postgres_url))


def test_orchestration_failure_is_recorded_not_lost(tmp_path):
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    from models import AssetRef
    from tasks.ledger import record_orchestration_failure

    ledger = Ledger(url=f"sqlite:///{tmp_path / 'l.db'}")
    request = httpx.Request("POST", "http://127.0.0.1/api/task_runs/")
    exc = PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError("503", request=request, response=httpx.Response(503, request=request))
    )
    outcome = record_orchestration_failure(ledger, AssetRef(client="acme", uri="file:///a.png", name="a.png"), exc)
    assert outcome.state == "failed" and outcome.reason.startswith("orchestration: PrefectHTTPStatusError")
    (row,) = ledger.entries(client="acme")
    assert row.state == "failed" and row.source_uri == "file:///a.png"
