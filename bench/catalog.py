"""Benchmark: a generated catalog through catalog_refresh (local engine) vs a plain loop.

    python bench/catalog.py            # 200 assets
    python bench/catalog.py -n 1000 --only prefect    # memory at catalog scale

Both modes do the same work per asset — load and normalise, route, prompt,
generate with the local engine, watermark + encode, technical gates, publish to
a gallery, write the ledger row — once as Prefect flows and tasks, once as a
plain Python loop calling the same task functions through `.fn`. Each mode runs
in its own subprocess so peak RSS is its own. Prints assets/minute, the
overhead ratio and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_catalog(folder: Path, n: int, size: int = 512) -> None:
    """n distinct synthetic product shots (gradient backdrop, a seeded shape)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        y = np.linspace(0, 1, size)[:, None, None]
        base = rng.integers(120, 240, 3)
        arr = np.broadcast_to(base * (1 - 0.3 * y), (size, size, 3)).astype(np.uint8)
        img = Image.fromarray(arr)
        d = ImageDraw.Draw(img)
        x0, y0 = rng.integers(40, size // 2, 2)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        d.rounded_rectangle([x0, y0, x0 + size // 3, y0 + size // 3], radius=int(rng.integers(4, 60)), fill=colour)
        d.ellipse([size - x0 - 80, size - y0 - 80, size - x0, size - y0], fill=tuple(255 - c for c in colour))
        img.save(folder / f"product-{i:05d}.jpg", quality=90)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident set now (VmRSS)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Samples RSS twice a second, so a run can tell its peak over its first fifth from its peak over
    all of it: at a steady rate, the first fifth of 1,000 assets is the first 200."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append((time.monotonic(), rss_mb()))

    def __enter__(self) -> "RssSampler":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_in_first(self, fraction: float) -> float:
        end = self._started + fraction * (self.samples[-1][0] - self._started) if self.samples else 0
        return max((r for t, r in self.samples if t <= end), default=0.0)


def run_prefect(catalog: Path, state: Path) -> dict:
    from brandforge.deployments.demo import demo_profile
    from brandforge.flows.catalog_refresh import run_catalog

    t0 = time.monotonic()
    demo_profile(state, client_id="bench").save("bench", overwrite=True)  # first API call starts the server
    startup = time.monotonic() - t0
    t1 = time.monotonic()
    with RssSampler() as rss:
        summary = run_catalog("bench", source=str(catalog), work_dir=str(state / "work"))
    seconds = time.monotonic() - t1
    return {"mode": "prefect", "seconds": seconds, "startup_s": startup, "counts": summary.counts, "rss_mb": peak_rss_mb(),
            "rss_first_fifth_mb": rss.peak_in_first(0.2)}


def run_plain(catalog: Path, state: Path) -> dict:
    """The same task functions, called directly: no flow runs, no task runs, no API."""
    from prefect.filesystems import LocalFileSystem
    from prefect.logging import disable_run_logger

    from brandforge.deployments.demo import demo_profile

    with disable_run_logger():  # task bodies that log would otherwise need a run context
        return _plain_loop(catalog, state, demo_profile(state, client_id="bench"), LocalFileSystem(basepath=str(catalog)))


def _plain_loop(catalog: Path, state: Path, profile, storage) -> dict:
    from brandforge.models import AssetRef, Candidate, LedgerEntry, PublishItem
    from brandforge.tasks.gates.decide import score_candidates
    from brandforge.tasks.generate import generate
    from brandforge.tasks.load import list_local, load_asset
    from brandforge.tasks.postprocess.chain import ChainContext, postprocess_candidate
    from brandforge.tasks.prompt import plan_asset
    from brandforge.tasks.publish import publish

    counts: dict[str, int] = {}
    t1 = time.monotonic()
    for name in list_local(catalog):
        ref = AssetRef(client="bench", uri=(catalog / name).as_uri(), name=name)
        asset = load_asset.fn(ref, storage, str(state / "work"))
        plan = plan_asset.fn(asset, profile)
        recipe, rkey, request, gkey = plan.recipe, plan.recipe_key, plan.request, plan.generation_key
        out_dir = state / "work" / "bench" / asset.source_key[:16] / gkey[:16]
        result = asyncio.run(generate(request, profile.provider, str(out_dir)))
        ctx = ChainContext(seed=request.seed, palette=tuple(profile.palette), logo_path=profile.logo_path,
                           source_path=asset.path, output_format=recipe.output_format, metadata={"generation_key": gkey})
        cands = []
        for i, raw in enumerate(result.images):
            done = postprocess_candidate.fn(raw, recipe.chain, ctx, str(out_dir / f"final-{i}"))
            cands.append(Candidate(index=i, raw_path=raw, path=done.path, extra_outputs=done.extra_outputs))
        decision = score_candidates.fn(cands, profile, recipe, asset.path, ref.uri)
        state_name, url = ("published", None) if decision.outcome == "publish" else ("quarantined", None)
        if decision.outcome == "publish":
            best = decision.chosen
            item = PublishItem(client="bench", name=name, generation_key=gkey, image_path=best.path, source_uri=ref.uri,
                               source_key=asset.source_key, source_path=asset.path)
            url = asyncio.run(publish(item, profile.target, profile.ledger)).url
        profile.ledger.record(LedgerEntry(client="bench", source_uri=ref.uri, source_key=asset.source_key, recipe_key=rkey,
                                          generation_key=gkey, state=state_name, published_url=url,
                                          phash=decision.phashes.get(decision.chosen.index) if decision.chosen else None))
        counts[state_name] = counts.get(state_name, 0) + 1
    return {"mode": "plain", "seconds": time.monotonic() - t1, "counts": counts, "rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="assets in the generated catalog (default 200)")
    parser.add_argument("--only", choices=["prefect", "plain"], help="run one mode (e.g. a 1,000-asset memory run)")
    parser.add_argument("--mode", choices=["prefect", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.mode:
        fn = run_prefect if args.mode == "prefect" else run_plain
        print(json.dumps(fn(Path(args.catalog), Path(args.state))))
        return

    with tempfile.TemporaryDirectory(prefix="bf-bench-") as tmp:
        catalog = Path(tmp) / "catalog"
        make_catalog(catalog, args.n)
        results = {}
        for mode in [args.only] if args.only else ["plain", "prefect"]:
            state = Path(tmp) / f"state-{mode}"
            env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                   "PREFECT_HOME": str(Path(tmp) / "prefect-home"),
                   # a busy machine can take more than the default 20 s to start the ephemeral API
                   "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--catalog", str(catalog), "--state", str(state)],
                                 capture_output=True, text=True, env=env, cwd=ROOT)
            lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
            if out.returncode or not lines:
                sys.exit(f"{mode} run failed:\n{out.stderr[-3000:]}")
            results[mode] = json.loads(lines[-1])

    print(f"catalog benchmark: {args.n} assets, local engine, {os.cpu_count()} cores")
    print(f"{'mode':<10}{'seconds':>10}{'assets/min':>12}{'peak RSS MB':>13}  states")
    for r in results.values():
        print(f"{r['mode']:<10}{r['seconds']:>10.1f}{args.n / r['seconds'] * 60:>12.0f}{r['rss_mb']:>13.0f}  {r['counts']}")
    if pf := results.get("prefect"):
        print(f"catalog process peak RSS over the run's first fifth {pf['rss_first_fifth_mb']:.0f} MB, "
              f"over all of it {pf['rss_mb']:.0f} MB")
    if len(results) == 2:
        plain, pf = results["plain"], results["prefect"]
        print(f"Prefect overhead ratio (prefect / plain wall time): {pf['seconds'] / plain['seconds']:.2f}x "
              f"(+{(pf['seconds'] - plain['seconds']) / args.n * 1000:.0f} ms per asset); "
              f"ephemeral API start-up, not counted above: {pf['startup_s']:.1f} s. The plain loop runs one "
              f"asset at a time; the flow runs {os.environ.get('BRANDFORGE_MAX_PARALLEL', 24)} in parallel.")


if __name__ == "__main__":
    main()
