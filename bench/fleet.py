"""One worker vs two workers: the same chunked catalog over a process work pool (deployments/fleet.py).

    .venv/bin/python bench/fleet.py -n 24 --chunks 4 --limit 1
    .venv/bin/python bench/fleet.py -n 48 --chunks 4 --provider replicate --latency 5 --parallel 2

PostgreSQL, a Prefect server on it and the pool start once; the catalog (crops of the demo catalog, local
engine, ledger on the same PostgreSQL) runs with one worker, then with two (a fresh client each time, so no
asset is skipped). `--limit 1` makes each worker take one slice at a time, so the workers bind, not the
provider. Prints assets/min for each and the ratio (goal ≥ 1.8× where the machine has cores for two workers:
the local engine is CPU work, so on 2 shared cores expect less). With `--provider replicate`, the
Replicate fake (its own process, bench/remote_fake.py, no styling work, a limit far above what is asked)
takes L seconds per job and each chunk run keeps `--parallel` assets in progress: a worker's
concurrency binds, as it does where a fleet's workers have the cores and the provider has the headroom.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=24, help="assets in the catalog")
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--limit", type=int, default=1, help="slices at once per worker")
    parser.add_argument("--provider", choices=["local", "replicate"], default="local")
    parser.add_argument("--latency", type=float, default=5.0, help="seconds per job at the Replicate fake")
    parser.add_argument("--parallel", type=int, default=2,
                        help="with --provider replicate: assets in progress per chunk run (BRANDFORGE_MAX_PARALLEL)")
    args = parser.parse_args()
    if args.provider == "replicate":  # read at import by the catalog and, through the environment, by the workers
        os.environ["BRANDFORGE_MAX_PARALLEL"] = str(args.parallel)
        os.environ["BRANDFORGE_URL_ALLOW"] = "127.0.0.1"

    from brandforge.blocks.ledger import Ledger
    from brandforge.deployments.demo import demo_profile
    from brandforge.deployments.fleet import create_database, fleet, local_postgres
    from brandforge.deployments.serve import register_block_types
    from brandforge.flows.catalog_refresh import catalog_refresh
    from tests.foundation.test_ledger_catalog import crops

    from bench.remote_fake import RemoteFake
    from brandforge.blocks.providers.replicate import ReplicateProvider
    from tests.fakes.replicate import TOKEN

    work = Path(tempfile.mkdtemp(prefix="bf-bench-fleet-"))
    catalog = crops(work / "catalog", args.n)
    rates = {}
    fake = RemoteFake("replicate:FakeReplicate", latency_s=args.latency, rate_limit_rpm=6000, styled=False)
    with ExitStack() as stack:
        if args.provider == "replicate":
            stack.enter_context(fake)
        server = stack.enter_context(local_postgres())
        with fleet(create_database(server), work / "fleet", workers=1, limit=args.limit) as crew:
            register_block_types()
            for workers in (1, 2):
                while len(crew.workers) < workers:
                    crew.add_worker()
                client = f"bench-{workers}w"
                state = work / client
                profile = demo_profile(state)
                profile.client_id, profile.ledger = client, Ledger(url=create_database(server))
                if args.provider == "replicate":
                    profile.provider = ReplicateProvider(base_url=fake.url, api_key=TOKEN, job_dir=str(state / "jobs"),
                                                         price_per_image_usd=0.0115, requests_per_minute=6000,
                                                         max_concurrent_jobs=64, limit_group=client)
                profile.save(client, overwrite=True)
                started = time.monotonic()
                summary = catalog_refresh(client=client, source=str(catalog), work_dir=str(state / "work"),
                                          chunks=args.chunks, return_state=True).result()
                seconds = time.monotonic() - started
                rates[workers] = summary.total / seconds * 60
                print(f"{workers} worker(s): {summary.total} assets in {seconds:.1f} s = {rates[workers]:.1f} assets/min "
                      f"{summary.counts}", flush=True)
    print(f"two workers / one worker: {rates[2] / rates[1]:.2f}x  ({os.cpu_count()} CPU(s), {args.n} assets, "
          f"{args.chunks} chunks, limit {args.limit} per worker, provider {args.provider})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
