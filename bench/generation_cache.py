"""Benchmark: what a rerun pays the provider, through catalog_refresh against the Replicate fake.

    python bench/generation_cache.py              # 50 assets, L = 1 s per job
    python bench/generation_cache.py -n 20 --latency 3

Phases, each a `catalog_refresh` of the same client:

0. the catalog, first run (every asset generated and paid once);
a. the same catalog with a changed watermark anchor;
b. the same catalog with a changed gate threshold;
c. a second catalog whose run is SIGKILLed at a random point, then rerun.

Prints provider submissions (jobs the fake accepted, i.e. billed) per phase,
assets/min and the run's cost. Goal: 0 for (a) and (b); for (c) the submissions
of the killed run and its rerun together equal the assets. Starts a temporary
Prefect server (the test harness) so the killed run and the rerun share it.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import replicate_block, start_catalog  # noqa: E402  (sets the bench environment)

from PIL import Image, ImageOps  # noqa: E402

from bench.catalog import make_catalog  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="assets per catalog (default 50)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per job at the fake (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill time (phase c)")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from brandforge.deployments.demo import demo_profile
    from brandforge.flows.catalog_refresh import MAX_PARALLEL, run_catalog
    from brandforge.models import StepSpec
    from tests.fakes import replicate as fake_replicate
    from tests.fakes.base import Knobs, serve

    rng = random.Random(args.seed)
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=args.latency))
    with tempfile.TemporaryDirectory(prefix="bf-gencache-") as tmp, prefect_test_harness(server_startup_timeout=120), serve(fake):
        tmp_path = Path(tmp)
        state, work = tmp_path / "state", tmp_path / "state" / "work"
        catalog = tmp_path / "catalog"
        make_catalog(catalog, args.n, size=384)
        # Job slots for two runs' assets in flight: the killed run's leases stay held here, because the
        # test harness's server runs no repossessor (a real server revokes them when the 60 s lease runs
        # out). With 16, the rerun waited for them forever.
        profile = demo_profile(state, client_id="bench").model_copy(update={"provider": replicate_block(
            fake, tmp_path / "jobs", requests_per_minute=600, max_concurrent_jobs=4 * MAX_PARALLEL)})
        rows = []

        def phase(name: str, prof, folder: Path) -> None:
            prof.save("bench", overwrite=True)
            before, started = fake.stats["accepted"], time.monotonic()
            summary = run_catalog("bench", source=str(folder), work_dir=str(work))
            seconds = time.monotonic() - started
            rows.append((name, fake.stats["accepted"] - before, args.n / seconds * 60, summary.cost_usd, summary.counts))
            print(f"{name}: {rows[-1][1]} submissions in {seconds:.1f} s", flush=True)

        phase("0  first run", profile, catalog)
        recipes = [r.model_copy(update={"chain": [StepSpec(step=s.step, params={**s.params, "anchor": "top-left"})
                                                  if s.step == "watermark" else s for s in r.chain]}) for r in profile.recipes]
        phase("a  watermark anchor changed", profile.model_copy(update={"recipes": recipes}), catalog)
        gates = profile.gates.model_copy(update={"min_sharpness": profile.gates.min_sharpness + 1})
        phase("b  gate threshold changed", profile.model_copy(update={"recipes": recipes, "gates": gates}), catalog)

        # c: new pixels (mirrored sources), the run killed at a random point, then rerun.
        second = tmp_path / "catalog-2"
        second.mkdir()
        for path in sorted(catalog.iterdir()):
            ImageOps.mirror(Image.open(path)).save(second / path.name, quality=90)
        final = profile.model_copy(update={"recipes": recipes, "gates": gates})
        final.save("bench", overwrite=True)
        before = fake.stats["accepted"]
        proc = start_catalog("bench", second, work)
        wait_for = rng.uniform(0.2, 0.9) * args.n  # somewhere before the run can have finished
        target = max(1, int(wait_for))
        deadline = time.monotonic() + 600
        while fake.stats["accepted"] - before < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # Submissions the fake received before the kill are billed once it has drawn them (off its event
        # loop): count them with the killed run, not in neither phase.
        settled = time.monotonic()
        last = fake.stats["accepted"]
        while time.monotonic() - settled < 2.0:
            time.sleep(0.2)
            if fake.stats["accepted"] != last:
                last, settled = fake.stats["accepted"], time.monotonic()
        killed = fake.stats["accepted"] - before
        rows.append(("c1 run SIGKILLed", killed, float("nan"), float("nan"), {}))
        phase("c2 rerun after the kill", final, second)

    print(f"generation cache benchmark: {args.n} assets per catalog, Replicate fake L={args.latency:g} s, {os.cpu_count()} cores")
    print(f"{'phase':<30}{'submissions':>12}{'assets/min':>12}{'cost $':>9}  states")
    for name, subs, per_min, cost, counts in rows:
        print(f"{name:<30}{subs:>12}{per_min:>12.1f}{cost:>9.4f}  {counts}")
    c_total = rows[-2][1] + rows[-1][1]
    print(f"(c) submissions over the killed run and its rerun: {c_total} for {args.n} assets "
          f"({'each generation paid once' if c_total == args.n else 'NOT once per asset'})")


if __name__ == "__main__":
    main()
