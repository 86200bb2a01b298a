"""Benchmark: how much of a provider's rate limit `catalog_refresh` uses, end to end.

    python bench/catalog_provider.py                     # 200 assets, R = 120 jobs/min, L = 5 s
    python bench/catalog_provider.py -n 60 --rpm 60 --latency 3
    python bench/catalog_provider.py --busy 1.0          # one of the 2 cores taken by another process

A generated catalog runs through `catalog_refresh` (the product's path: listing,
every stage, the ledger, the gallery) with a `ReplicateProvider` pointed at the
Replicate fake, which takes L seconds per job and enforces R job submissions per
minute (429 with Retry-After over it). The fake runs in its own process
(bench/remote_fake.py) and does no styling work unless --styled-fake: a real
provider renders on its own machines, not on the catalog's cores. Prints
achieved assets/min ÷ R, the mean and peak number of jobs in flight at the
provider, the 429s it answered, and the CPU seconds per asset of the catalog
process, the Prefect server and the fake.
Goal on 2 cores: ≥ 0.9 of R at R = 120/min, L = 5 s, 200 assets. The first
minute's figures include the limiter's warm-up; the rate over the steady middle
(from the 10th to the 90th percentile of submissions) is printed too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
# The provider fake listens on 127.0.0.1, which the URL guard refuses unless allow-listed.
os.environ.setdefault("BRANDFORGE_URL_ALLOW", "127.0.0.1")

from bench.catalog import make_catalog  # noqa: E402
from bench.remote_fake import RemoteFake  # noqa: E402


def in_flight(jobs: list[tuple[float, float]], start: float, end: float) -> tuple[float, int]:
    """Mean and peak jobs in flight over [start, end] from (created, ready) pairs."""
    busy = sum(max(0.0, min(b, end) - max(a, start)) for a, b in jobs)
    edges = sorted([(a, 1) for a, _ in jobs] + [(b, -1) for _, b in jobs])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return busy / max(1e-9, end - start), peak


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes_cpu() -> dict[int, float]:
    """CPU seconds of this process and each of its children (the Prefect server, the provider fake)."""
    me = os.getpid()
    children = set()
    for task in Path(f"/proc/{me}/task").iterdir():
        try:
            children.update(int(p) for p in (task / "children").read_text().split())
        except OSError:  # the thread ended while we looked
            continue
    return {pid: cpu_seconds(pid) for pid in [me, *sorted(children)]}


def host_speed_ms() -> float:
    """Milliseconds for a fixed piece of work (Python and Pillow, one thread), the median of five: the
    same code on this machine spent 0.73–1.05 CPU s per asset from run to run, and this says which
    kind of run it was."""
    from PIL import Image, ImageFilter

    image = Image.new("RGB", (512, 512), (120, 80, 200))
    lut = ImageFilter.Color3DLUT.generate(17, lambda r, g, b: (r * 0.9, g, b))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        image.filter(lut).resize((768, 768), Image.Resampling.LANCZOS)
        sum(i * i for i in range(200_000))
        times.append(time.perf_counter() - started)
    return sorted(times)[2] * 1000


def burn(share: float) -> None:
    """Busy-loop `share` of one core (in 20 ms periods) until killed: another tenant on the host."""
    while True:
        started = time.perf_counter()
        while time.perf_counter() - started < 0.02 * share:
            pass
        time.sleep(0.02 * (1 - share))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="assets (default 200)")
    parser.add_argument("--rpm", type=float, default=120.0, help="R: job submissions per minute the fake allows (default 120)")
    parser.add_argument("--latency", type=float, default=5.0, help="L: seconds per job at the fake (default 5)")
    parser.add_argument("--keep", metavar="DIR", help="keep the catalog, ledger and outputs in DIR (its stage timings)")
    parser.add_argument("--styled-fake", action="store_true",
                        help="let the fake style its outputs as the local engine does (CPU on this machine)")
    parser.add_argument("--busy", type=float, default=0.0, metavar="CORES",
                        help="keep this many cores busy beside the run (e.g. 1.0: one of 2 cores taken), to see the "
                             "figure on a host with less CPU to spare; the host's speed varies from run to run")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from brandforge.blocks.providers.replicate import ReplicateProvider
    from brandforge.deployments.demo import demo_profile
    from brandforge.flows.catalog_refresh import MAX_PARALLEL, run_catalog
    from tests.fakes import replicate as fake_replicate

    # `styled=False`: the fake's outputs cost this machine almost no CPU, as a real provider's do.
    fake = RemoteFake("replicate:FakeReplicate", latency_s=args.latency, rate_limit_rpm=args.rpm, rate_limit_burst=2,
                      styled=args.styled_fake)
    keep = Path(args.keep).resolve() if args.keep else None
    with fake, tempfile.TemporaryDirectory(prefix="bf-provider-") as tmp, prefect_test_harness(server_startup_timeout=120):
        tmp_path = keep or Path(tmp)
        state = tmp_path / "state"
        catalog = tmp_path / "catalog"
        make_catalog(catalog, args.n, size=384)
        # The profile says what the provider allows; the fake enforces it.
        profile = demo_profile(state, client_id="bench").model_copy(update={"provider": ReplicateProvider(
            base_url=fake.url, api_key=fake_replicate.TOKEN, request_timeout_s=10.0, job_dir=str(tmp_path / "jobs"),
            price_per_image_usd=0.0115, requests_per_minute=int(args.rpm), max_concurrent_jobs=64)})
        profile.save("bench", overwrite=True)
        busy = []
        for share in [1.0] * int(args.busy) + ([args.busy % 1] if args.busy % 1 else []):
            busy.append(multiprocessing.get_context("spawn").Process(target=burn, args=(share,), daemon=True))
            busy[-1].start()
        speed_before = host_speed_ms()
        started = time.monotonic()  # the fake's job times are on this clock too
        cpu_before = processes_cpu()
        summary = run_catalog("bench", source=str(catalog), work_dir=str(state / "work"))
        seconds = time.monotonic() - started
        cpu = {pid: t - cpu_before.get(pid, 0.0) for pid, t in processes_cpu().items()}
        stats, jobs = fake.report()
        jobs.sort()
        speed_after = host_speed_ms()
        for process in busy:
            process.kill()

    per_min = args.n / seconds * 60
    mine = cpu.pop(os.getpid())
    fake_cpu = cpu.pop(fake.pid, 0.0)
    for process in busy:  # not the product's
        cpu.pop(process.pid, None)
    server_cpu = sum(cpu.values())  # the Prefect API server (and its helpers)
    mean, peak = in_flight(jobs, started, started + seconds)
    created = [a for a, _ in jobs]
    lo, hi = created[len(created) // 10], created[(len(created) * 9) // 10]
    steady = (len(created) * 8 // 10) / max(1e-9, hi - lo) * 60
    print(f"catalog_refresh vs provider limit: {args.n} assets, R={args.rpm:g}/min, L={args.latency:g} s, "
          f"{MAX_PARALLEL} assets in progress, {os.cpu_count()} cores"
          + (f", {args.busy:g} of them kept busy by another process" if args.busy else ""))
    print(f"states {summary.counts}; {seconds:.1f} s")
    print(f"achieved {per_min:.1f} assets/min = {per_min / args.rpm:.3f} of R "
          f"(steady middle: {steady:.1f} submissions/min = {steady / args.rpm:.3f} of R)")
    last_done = max(b for _, b in jobs)
    print(f"first submission {created[0] - started:.1f} s after the start; last job done {started + seconds - last_done:.1f} s "
          f"before the end; {last_done - created[0]:.1f} s from the first submission to the last job done")
    # Where the rate was lost: at R the submissions come 60/R s apart; a longer gap is time the provider sat idle.
    gaps = sorted(((b - a, a - started) for a, b in zip(created, created[1:])), reverse=True)
    spacing = 60 / args.rpm
    lost = sum(g - spacing for g, _ in gaps if g > 2 * spacing)
    print(f"gaps between submissions over {2 * spacing:.1f} s: {sum(g > 2 * spacing for g, _ in gaps)}, "
          f"{lost:.1f} s lost; longest: " + ", ".join(f"{g:.1f} s at {at:.0f} s" for g, at in gaps[:6]))
    print(f"jobs in flight: mean {mean:.1f}, peak {peak} (R×L/60 = {args.rpm * args.latency / 60:.1f}); "
          f"429s answered: {stats['429']}; jobs accepted {stats['accepted']}")
    # CPU per asset does not depend on what else the machine runs: it says what the cores allow.
    total = mine + server_cpu
    print(f"CPU per asset: catalog process {mine / args.n:.3f} s, Prefect server {server_cpu / args.n:.3f} s "
          f"(together {total / args.n:.3f} s: at most {60 * (os.cpu_count() or 1) * args.n / total:.0f} assets/min "
          f"on {os.cpu_count()} cores); provider fake {fake_cpu / args.n:.3f} s (the provider's work, not the product's)")
    print(f"host speed: a fixed piece of work took {speed_before:.0f} ms before the run and {speed_after:.0f} ms after "
          "(lower is faster; compare runs by it)")


if __name__ == "__main__":
    main()
