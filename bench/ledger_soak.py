"""Soak: are the jobs a provider billed the jobs the ledger recorded? Through `catalog_refresh`.

    python bench/ledger_soak.py                 # 36 assets × 3 runs, SQLite ledger
    python bench/ledger_soak.py -n 36 --runs 3 --postgres

A catalog runs against the Replicate fake with faults (5xx answers, corrupt
outputs) while its first run's publishes all fail (the S3 bucket, on moto, does
not exist yet), so every asset is paid for and fails after the payment; later
runs publish (from the generation store) or retry what failed. Prints what the fake billed (`accepted` jobs) beside what the ledger's
job journal holds and what it says was spent; the goal is equal.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
PRICE = Decimal("0.0115")


def start_postgres(root: Path) -> tuple[str, list[str]]:
    from tests.conftest import free_port

    bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(root / "data"), "-U", "brandforge", "--auth=trust"], check=True, capture_output=True)
    port = free_port()
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "pg.log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    return f"postgresql+psycopg://brandforge@127.0.0.1:{port}/postgres", [*as_user, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "stop"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=36, help="assets in the catalog")
    parser.add_argument("--runs", type=int, default=3, help="catalog runs (the first one's publishes all fail)")
    parser.add_argument("--postgres", action="store_true", help="a PostgreSQL ledger instead of SQLite")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from brandforge.blocks.ledger import Ledger
    from brandforge.blocks.providers.replicate import ReplicateProvider
    from brandforge.deployments.demo import demo_profile
    from brandforge.flows.catalog_refresh import catalog_refresh
    from tests.fakes import replicate as fake_replicate
    from tests.fakes.base import Knobs, serve
    from tests.foundation.test_ledger_catalog import crops

    work = Path(tempfile.mkdtemp(prefix="bf-soak-"))
    stop_pg: list[str] = []
    try:
        profile = demo_profile(work / "state")
        if args.postgres:
            url, stop_pg = start_postgres(Path(tempfile.mkdtemp(prefix="bf-soak-pg-")))
            profile.ledger = Ledger(url=url)
        catalog = crops(work / "catalog", args.n)
        fake = fake_replicate.FakeReplicate(Knobs(latency_s=0.2, error_rate_5xx=0.15, corrupt_rate=0.2, webhook="lost", seed=11))
        from moto.server import ThreadedMotoServer
        from prefect_aws import AwsCredentials, S3Bucket
        from prefect_aws.client_parameters import AwsClientParameters

        from brandforge.blocks.targets.s3 import S3Target
        from tests.conftest import free_port

        port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        moto.start()
        creds = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
                               aws_client_parameters=AwsClientParameters(endpoint_url=f"http://127.0.0.1:{port}"))
        profile.target = S3Target(bucket=S3Bucket(bucket_name="soak-later", credentials=creds))
        started = time.monotonic()
        with prefect_test_harness(server_startup_timeout=120), serve(fake):
            profile.provider = ReplicateProvider(
                base_url=fake.url, api_key=fake_replicate.TOKEN, request_timeout_s=5.0, job_dir=str(work / "jobs"),
                price_per_image_usd=float(PRICE), requests_per_minute=6000, max_concurrent_jobs=8,
            )
            for run in range(args.runs):
                if run == 1:
                    creds.get_s3_client().create_bucket(Bucket="soak-later")
                profile.save("demo", overwrite=True)
                state = catalog_refresh(client="demo", source=str(catalog), work_dir=str(work / "state" / "work"),
                                        return_state=True)
                summary = state.result(raise_on_failure=False)  # run 1 fails every asset on purpose: a Failed run
                print(f"run {run + 1}: {summary.counts} ({state.type.value}: {state.message})")
        jobs = [j for j in profile.ledger.jobs("demo") if j.job_id]
        billed = fake.stats["accepted"]
        print(f"\nledger: {'PostgreSQL' if args.postgres else 'SQLite'}; {args.n} assets × {args.runs} runs in {time.monotonic() - started:.0f} s")
        print(f"provider billed jobs      {billed}  (${PRICE * billed})")
        print(f"ledger journalled jobs    {len(jobs)}  (spent ${profile.ledger.spent('demo')})")
        print(f"unrecorded                {billed - len(jobs)}")
        print(f"fake stats                {fake.stats}")
        moto.stop()
    finally:
        if stop_pg:
            subprocess.run(stop_pg, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
