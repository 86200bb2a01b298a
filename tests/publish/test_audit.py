"""The ledger's audit trail: `brandforge audit` lineage and `brandforge export` for a date range."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from brandforge.blocks.ledger import Ledger
from brandforge.deployments.cli import main
from brandforge.models import LedgerEntry

KEY = "9f" * 32
SOURCE = "5a" * 32


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}")
    base = dict(client="demo", source_uri="s3://catalog/red mug.jpg", source_key=SOURCE, recipe="watercolour", recipe_key="r1")
    ledger.record(LedgerEntry(**base, state="failed", reason="load: truncated file",
                              created_at=datetime(2026, 10, 30, 9, tzinfo=timezone.utc)))
    ledger.record(LedgerEntry(
        **base, generation_key=KEY, provider="replicate", model="sdxl", job_ids=["job-1"], state="failed",
        reason="publish: WordPress answered 503 to the media upload", created_at=datetime(2026, 11, 2, 9, tzinfo=timezone.utc),
    ))
    ledger.record(LedgerEntry(
        **base, generation_key=KEY, provider="replicate", model="sdxl", job_ids=["job-1"], params={"strength": 0.6, "prompt": "watercolour of a mug"},
        seed=1234, scores={"variant-0": {"sharpness": 88.5}, "chosen": 0}, cost_usd=0.0115, state="published",
        target="wordpress", remote_ids={"post_id": 41, "media_id": 40, "media_url": "http://127.0.0.1:8089/wp-content/uploads/red.jpg"},
        published_url="http://127.0.0.1:8089/?p=41", created_at=datetime(2026, 11, 2, 9, 5, tzinfo=timezone.utc),
    ))
    ledger.record(LedgerEntry(client="other", source_uri="file:///x.jpg", state="quarantined", reason="sharpness",
                              created_at=datetime(2026, 12, 1, tzinfo=timezone.utc)))
    return ledger


@pytest.mark.parametrize("ref", ["http://127.0.0.1:8089/?p=41", KEY, KEY[:10], "3", "41", "http://127.0.0.1:8089/wp-content/uploads/red.jpg"])
def test_audit_prints_the_full_lineage(ledger, capsys, ref):
    assert main(["audit", ref, "--client", "demo", "--ledger", ledger.url]) == 0
    out = capsys.readouterr().out
    for expected in ("http://127.0.0.1:8089/?p=41", "s3://catalog/red mug.jpg", SOURCE, KEY, "replicate / sdxl", "job-1",
                     "1234", '"strength": 0.6', "sharpness", "wordpress", "post_id", "$0.0115", "History (3 ledger rows)", "load: truncated file"):
        assert expected in out, expected
    assert "publish: WordPress answered 503" in out


def test_audit_of_an_unknown_ref_says_what_it_accepts(ledger, capsys):
    assert main(["audit", "https://nowhere.invalid/x", "--client", "demo", "--ledger", ledger.url]) == 1
    assert "nothing of client 'demo' in the ledger" in capsys.readouterr().err


def test_export_csv_for_a_date_range(ledger, capsys):
    assert main(["export", "--since", "2026-11-01", "--until", "2026-11-30", "--format", "csv", "--client", "demo", "--ledger", ledger.url]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["state"] for r in rows] == ["failed", "published"]
    assert rows[1]["remote.post_id"] == "41" and rows[1]["seed"] == "1234"
    assert rows[1]["generation_key"] == KEY and rows[1]["cost_usd"] == "0.0115"
    # One column per score and parameter: the chosen variant's scores, each parameter, no JSON in them.
    assert rows[1]["score.sharpness"] == "88.5" and rows[1]["score.variant"] == "0"
    assert rows[1]["param.strength"] == "0.6" and rows[1]["param.prompt"] == "watercolour of a mug"
    assert rows[1]["job_ids"] == "job-1"
    assert not any(cell.startswith(("{", "[")) for row in rows for cell in row.values())


def test_export_json_to_a_file(ledger, tmp_path):
    out = tmp_path / "ledger.json"
    assert main(["export", "--since", "2026-10-01", "--format", "json", "-o", str(out), "--all-clients", "--ledger", ledger.url]) == 0
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == [1, 2, 3, 4] and records[2]["job_ids"] == ["job-1"]


def test_export_range_is_checked(ledger, capsys):
    assert main(["export", "--since", "2026-11-05", "--until", "2026-11-01", "--client", "demo", "--ledger", ledger.url]) == 2
    assert "--until" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--since", "last tuesday", "--client", "demo", "--ledger", ledger.url])
    assert "is not a date (YYYY-MM-DD)" in capsys.readouterr().err


def test_audit_and_export_show_only_the_named_client(ledger, capsys):
    """Tenant isolation: another client's key, URL or row id finds nothing; export lists one client's rows."""
    for ref in (KEY, "http://127.0.0.1:8089/?p=41", "3", "41"):
        assert main(["audit", ref, "--client", "other", "--ledger", ledger.url]) == 1
        captured = capsys.readouterr()
        assert "red mug" not in captured.out + captured.err and "nothing of client 'other'" in captured.err
    assert main(["export", "--format", "json", "--client", "other", "--ledger", ledger.url]) == 0
    assert [r["client"] for r in json.loads(capsys.readouterr().out)] == ["other"]
    assert main(["export", "--format", "json", "--client", "demo", "--ledger", ledger.url]) == 0
    assert {r["client"] for r in json.loads(capsys.readouterr().out)} == {"demo"}
    assert main(["export", "--format", "json", "--all-clients", "--ledger", ledger.url]) == 0
    assert {r["client"] for r in json.loads(capsys.readouterr().out)} == {"demo", "other"}


@pytest.mark.parametrize("command", [["export"], ["audit", KEY]])
def test_a_client_or_all_clients_must_be_named(ledger, capsys, command):
    with pytest.raises(SystemExit):
        main([*command, "--ledger", ledger.url])
    assert "--client NAME" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*command, "--client", "demo", "--all-clients", "--ledger", ledger.url])


@pytest.mark.usefixtures("prefect_server")
def test_audit_can_leave_a_prefect_artifact(ledger, capsys):
    from prefect.artifacts import Artifact

    assert main(["audit", KEY, "--artifact", "--client", "demo", "--ledger", ledger.url]) == 0
    artifact = Artifact.get(f"audit-{KEY[:16]}")
    assert artifact is not None and "http://127.0.0.1:8089/?p=41" in artifact.data and "job-1" in artifact.data
