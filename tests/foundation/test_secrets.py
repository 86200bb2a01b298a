"""Secrets stay secret: a full catalog with a distinctive secret in every block, then a grep of
everything a run leaves behind — the Prefect API's database (flow-run parameters, logs, state
messages, events, artifacts), result storage, the ledger and the CLI's output: 0 occurrences.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from brandforge.blocks.ledger import Ledger
from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.blocks.targets.s3 import S3Target
from brandforge.flows.catalog_refresh import catalog_refresh
from tests.conftest import ROOT, new_postgres_database
from tests.fakes import replicate as fake_replicate
from tests.fakes.base import Knobs, serve
from tests.foundation.test_ledger_catalog import crops

pytestmark = pytest.mark.usefixtures("prefect_server")

LEDGER_PASSWORD = "LedgerPW-7f3a9c1e"
AWS_KEY_ID = "AKIABFKEYID5E2D7C"
AWS_SECRET = "BfAwsSecret-0c4b8e2a"
WEBHOOK_TOKEN = "BfWebhookToken-93d1"
SECRETS = [LEDGER_PASSWORD, AWS_KEY_ID, AWS_SECRET, WEBHOOK_TOKEN, fake_replicate.TOKEN,
           fake_replicate.WEBHOOK_SECRET.removeprefix("whsec_")]


def found_in(blob: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in blob]


def flush_prefect() -> None:
    """Logs and events are shipped by background workers: let them reach the API before grepping it."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
    time.sleep(1)


def test_no_secret_reaches_the_api_results_ledger_or_cli(demo_profile, demo_state, tmp_path, moto_s3, postgres_server, caplog, capfd):
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, PREFECT_SERVER_DATABASE_CONNECTION_URL
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    caplog.set_level(logging.DEBUG)
    creds = AwsCredentials(aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET, region_name="us-east-1",
                           aws_client_parameters=AwsClientParameters(endpoint_url=moto_s3["endpoint_url"]))
    bucket = f"bf-secrets-{uuid.uuid4().hex[:8]}"
    creds.get_s3_client().create_bucket(Bucket=bucket)
    s3 = creds.get_s3_client()
    for path in sorted(crops(tmp_path / "catalog", 3).iterdir()):
        s3.put_object(Bucket=bucket, Key=f"in/{path.name}", Body=path.read_bytes())

    ledger_url = new_postgres_database(postgres_server).replace("brandforge@", f"brandforge:{LEDGER_PASSWORD}@")
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=0.05, webhook="lost"))
    with serve(fake):
        profile = demo_profile.model_copy(update={
            "client_id": "secretive",
            "source": S3Bucket(bucket_name=bucket, bucket_folder="in", credentials=creds),
            "target": S3Target(bucket=S3Bucket(bucket_name=bucket, bucket_folder="out", credentials=creds)),
            "ledger": Ledger(url=ledger_url),
            "webhook_token": SecretStr(WEBHOOK_TOKEN),
            "provider": ReplicateProvider(base_url=fake.url, api_key=fake_replicate.TOKEN,
                                          webhook_secret=fake_replicate.WEBHOOK_SECRET, request_timeout_s=5.0,
                                          job_dir=str(tmp_path / "jobs"), price_per_image_usd=0.01),
        })
        profile.save("secretive", overwrite=True)
        summary = catalog_refresh(client="secretive", work_dir=str(demo_state / "work"))
    assert summary.counts == {"published": 3}, [o.label for o in summary.outcomes]

    # The CLI, reading the ledger through the saved profile, as an operator would.
    key = summary.outcomes[0].generation_key
    cli = [sys.executable, "-m", "brandforge.deployments.cli"]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    outputs = [subprocess.run([*cli, *args, "--client", "secretive"], capture_output=True, cwd=ROOT, env=env, timeout=120)
               for args in (["export", "--format", "json"], ["export", "--format", "csv"], ["audit", key], ["audit", key, "--artifact"])]
    for out in outputs:
        assert out.returncode == 0, out.stderr.decode()[-2000:]
    failing = subprocess.run([*cli, "audit", "nothing-here", "--ledger", ledger_url, "--client", "secretive"],
                             capture_output=True, cwd=ROOT, env=env, timeout=120)
    assert failing.returncode == 1 and b"nothing of client 'secretive'" in failing.stderr
    outputs.append(failing)
    flush_prefect()

    leaks: dict[str, list[str]] = {}
    db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    for path in db.parent.glob(db.name + "*"):  # the database, its WAL and shared memory
        leaks[f"prefect api database {path.name}"] = found_in(path.read_bytes())
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value()).expanduser()
    for path in (p for p in storage.rglob("*") if p.is_file()) if storage.exists() else []:
        leaks[f"result {path.name}"] = found_in(path.read_bytes())
    ledger = profile.ledger
    dump = "\n".join(repr(e.model_dump()) for e in ledger.entries(client="secretive"))
    dump += "\n".join(repr(j) for j in ledger.jobs("secretive"))
    leaks["ledger rows and jobs"] = found_in(dump.encode())
    leaks["cli output"] = found_in(b"".join(o.stdout + o.stderr for o in outputs))
    # Every log record at INFO and above (what a worker writes; botocore's DEBUG records show the
    # access key id inside signed request details, which no deployment logs).
    leaks["logs"] = found_in("\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.INFO).encode())
    debug_leaks = {r.name for r in caplog.records if found_in(r.getMessage().encode())}
    assert debug_leaks <= {"botocore.auth", "botocore.endpoint", "botocore.hooks", "botocore.parsers", "botocore.retryhandler",
                           "urllib3.connectionpool", "botocore.httpsession", "botocore.credentials"}, debug_leaks
    captured = capfd.readouterr()
    leaks["stdout/stderr"] = found_in((captured.out + captured.err).encode())
    leaks = {where: found for where, found in leaks.items() if found}
    assert leaks == {}, leaks
    assert len(ledger.jobs("secretive")) == 3 and "**" not in ledger.url
    shutil.rmtree(tmp_path / "jobs", ignore_errors=True)
