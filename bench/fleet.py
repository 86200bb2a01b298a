"""One worker vs two workers: the same chunked catalog over a process work pool (deployments/fleet.py).

    .venv/bin/python bench/fleet.py -n 24 --chunks 4 --limit 1

PostgreSQL, a Prefect server on it and the pool start once; the catalog (crops of the demo catalog, local
engine, ledger on the same PostgreSQL) runs with one worker, then with two (a fresh client each time, so no
asset is skipped). `--limit 1` makes each worker take one slice at a time, so the workers bind, not the
provider. Prints assets/min for each and the ratio (goal ≥ 1.8× where the machine has cores for two workers:
the local engine is CPU work, so on 2 shared cores expect less).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
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
    args = parser.parse_args()

    from brandforge.blocks.ledger import Ledger
    from brandforge.deployments.demo import demo_profile
    from brandforge.deployments.fleet import create_database, fleet, local_postgres
    from brandforge.deployments.serve import register_block_types
    from brandforge.flows.catalog_refresh import catalog_refresh
    from tests.foundation.test_ledger_catalog import crops

    work = Path(tempfile.mkdtemp(prefix="bf-bench-fleet-"))
    catalog = crops(work / "catalog", args.n)
    rates = {}
    with local_postgres() as server:
        with fleet(create_database(server), work / "fleet", workers=1, limit=args.limit) as crew:
            register_block_types()
            for workers in (1, 2):
                while len(crew.workers) < workers:
                    crew.add_worker()
                client = f"bench-{workers}w"
                state = work / client
                profile = demo_profile(state)
                profile.client_id, profile.ledger = client, Ledger(url=create_database(server))
                profile.save(client, overwrite=True)
                started = time.monotonic()
                summary = catalog_refresh(client=client, source=str(catalog), work_dir=str(state / "work"),
                                          chunks=args.chunks, return_state=True).result()
                seconds = time.monotonic() - started
                rates[workers] = summary.total / seconds * 60
                print(f"{workers} worker(s): {summary.total} assets in {seconds:.1f} s = {rates[workers]:.1f} assets/min "
                      f"{summary.counts}", flush=True)
    print(f"two workers / one worker: {rates[2] / rates[1]:.2f}x  ({os.cpu_count()} CPU(s), {args.n} assets, "
          f"{args.chunks} chunks, limit {args.limit} per worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
