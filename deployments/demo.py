"""The demo: save a demo ClientProfile and refresh the demo catalog through the local engine.

`make run` calls this. It needs no network and no credentials: the local
engine generates, the gallery folder is the publish target and the ledger is a
SQLite file. Run it twice: the second run does no generation and no publish.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

# Offline by default: the ephemeral Prefect server must not try to send telemetry.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect.filesystems import LocalFileSystem

from brandforge.blocks.client_profile import ClientProfile
from brandforge.blocks.ledger import Ledger
from brandforge.blocks.providers.local_engine import LocalEngine
from brandforge.blocks.targets.gallery import LocalGallery
from brandforge.models import GateThresholds, Recipe, RoutingRule, StepSpec

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
PALETTE = ["#14213d", "#e8a838", "#fcf6ec", "#2b6f9e", "#c8553d"]
# The demo sources are small (300-768 px); the engine renders at this width, so every published
# image is at least 1024 px on its long side. (The test suite renders at 512 px: same pipeline, a
# quarter of the pixels; `BRANDFORGE_DEMO_WIDTH` is set in tests/conftest.py.)
WIDTH = int(os.environ.get("BRANDFORGE_DEMO_WIDTH", "1024"))


def demo_chain(anchor: str = "bottom-right", *finish: StepSpec, reframe: StepSpec | None = None) -> list[StepSpec]:
    """Grade toward the palette, any finishing steps, the logo, then a JPEG with provenance.

    A `reframe` goes after the grade: a grade maps each colour on its own, so a crop of the graded
    image is the graded crop, and every format shares one grade. Graded after the fork, each format
    (two of them enlarged to 1820 px) was graded on its own: 154 of the vintage chain's 346 ms per
    asset, against ~40 ms once (one thread, 1024 px)."""
    return [
        StepSpec(step="grade", params={"strength": 0.35, "protect_neutrals": 0.6}),
        *([reframe] if reframe else []),
        *finish,
        StepSpec(step="watermark", params={"anchor": anchor, "scale": 0.2, "opacity": 0.9}),
        StepSpec(step="encode", params={"format": "jpeg", "quality": 90}),
    ]


# A second offline provider: the local engine with a studio palette (its flat and duotone styles use it).
STUDIO_PALETTE = ["#1d1d1f", "#f5f5f7", "#b08d57"]


def demo_profile(state_dir: Path, client_id: str = "demo", catalog: Path | None = None) -> ClientProfile:
    """The demo client: five recipes routed by file name and record (the catalog's manifest.csv), two
    offline providers, versioned prompt templates per category (demo/templates.yaml), gallery, SQLite
    ledger; its source is the folder `catalog` (a LocalFileSystem block) when given."""
    recipes = [
        # A flat poster is printed: a light paper grain keeps its flat areas from reading as a banding defect.
        Recipe(name="poster", style="flat poster illustration", extra_prompt="bold brand colours", strength=0.85, width=WIDTH,
               chain=demo_chain("bottom-right", StepSpec(step="grain", params={"amount": 3, "size": 1.5}))),
        Recipe(name="watercolour", style="soft watercolour", extra_prompt="light paper texture", strength=0.8, width=WIDTH,
               chain=demo_chain("top-right")),
        Recipe(name="oil", style="oil painting", extra_prompt="rich impasto", strength=0.75, width=WIDTH,
               chain=demo_chain("bottom-right", StepSpec(step="vignette", params={"strength": 0.25}))),
        Recipe(name="sketch", style="pencil sketch", extra_prompt="studio product drawing", strength=0.9, width=WIDTH,
               chain=demo_chain("bottom-left")),
        # One source, three channel formats: 1:1 is the main output, 9:16 and 16:9 ride along.
        # Its height: the 1:1 main output of a landscape source is then 1024 px a side.
        Recipe(name="vintage", style="vintage film photograph", extra_prompt="warm 1970s look", strength=0.8, height=WIDTH,
               chain=demo_chain("bottom-right", StepSpec(step="grain", params={"amount": 5}),
                                StepSpec(step="vignette", params={"strength": 0.3}),
                                reframe=StepSpec(step="reframe", params={"ratios": ["1:1", "9:16", "16:9"]}))),
    ]
    return ClientProfile(
        client_id=client_id,
        display_name="Demo Co.",
        palette=PALETTE,
        logo_path=str(DEMO / "logo.png"),
        default_style="vintage film photograph",
        prompt_template="{style} of {subject} for {client}, {extra}",
        recipes=recipes,
        prompt_templates=str(DEMO / "templates.yaml"),
        timezone="Europe/London",
        routing=[
            RoutingRule(name="mugs", match="*mug*", recipe="poster"),
            RoutingRule(name="coffee", match="*coffee*", recipe="watercolour"),
            RoutingRule(name="cats", match="*cat*", recipe="oil"),
            # Space portraits go to the studio engine; low-priority assets to the cheapest provider that
            # passes often enough (the default until the ledger has history).
            RoutingRule(name="space-portraits", match="*astronaut*", when={"category": "space"}, recipe="sketch",
                        provider="studio"),
            RoutingRule(name="low-priority", when={"priority": "low"}, recipe="vintage", provider="cheapest"),
        ],
        default_recipe="vintage",
        gates=GateThresholds(min_width=256, min_height=256, min_sharpness=20.0),
        provider=LocalEngine(job_dir=str(state_dir / "jobs"), palette=PALETTE),
        providers={"studio": LocalEngine(job_dir=str(state_dir / "jobs"), palette=STUDIO_PALETTE, model="brandforge-local-v1-studio")},
        target=LocalGallery(folder=str(state_dir / "gallery"), title="brandforge demo gallery"),
        ledger=Ledger(url=f"sqlite:///{state_dir / 'ledger.db'}"),
        source=LocalFileSystem(basepath=str(Path(catalog).resolve())) if catalog else None,
    )


def print_summary(summary) -> None:
    print()
    print(f"brandforge demo — client {summary.client}: {summary.total} assets in {summary.seconds:.1f} s, cost ${summary.cost_usd:.2f}")
    for o in summary.outcomes:
        print(f"  {o.state:<12} {o.name:<24} {o.reason[:90]}")
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(summary.counts.items()))
    print(f"  ({counts})")
    if summary.counts.get("skipped"):
        print("  skipped = already done for the same bytes and recipe: no generation, no publish.")
    if summary.gallery:
        print(f"\nOpen the gallery: file://{summary.gallery}")


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}


class AssetProgress(logging.Handler):
    """A progress bar on the terminal, fed by the task-run log: one step per asset task that finishes."""

    def __init__(self, total: int, out: TextIO = sys.stdout) -> None:
        super().__init__(logging.INFO)
        self.total, self.done, self.out = total, 0, out

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "task_run_name", "") or ""
        message = record.getMessage()
        if not name.startswith("asset ") or "Finished in state" not in message:
            return
        self.done += 1
        state = message.split("Finished in state", 1)[1].strip().split("(")[0]
        width = 30
        filled = round(width * self.done / max(self.total, self.done))
        # On a terminal the bar redraws in place; into a file or pipe, one line per asset.
        start, end = ("\r", "") if self.out.isatty() else ("", "\n")
        self.out.write(f"{start}  [{'#' * filled}{'.' * (width - filled)}] {self.done}/{max(self.total, self.done)}  "
                       f"{name.removeprefix('asset ')[:32]:<32} {state:<10}{end}")
        self.out.flush()


def quiet_prefect_console(progress: logging.Handler) -> None:
    """Prefect's console shows warnings and errors only; run and task logs still reach the API (the UI)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.WARNING)
    task_runs = logging.getLogger("prefect.task_runs")
    task_runs.setLevel(min(task_runs.getEffectiveLevel(), logging.INFO))
    task_runs.addHandler(progress)


def main(argv: list[str] | None = None) -> int:
    from brandforge.flows.catalog_refresh import run_catalog

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", default=str(ROOT / ".brandforge"), help="ledger, jobs, work and gallery folder")
    parser.add_argument("--catalog", default=str(DEMO / "catalog"))
    parser.add_argument("-v", "--verbose", action="store_true", help="print Prefect's full run and task logs (the UI has them either way)")
    args = parser.parse_args(argv)
    state = Path(args.state_dir).resolve()
    if not args.verbose:
        total = sum(1 for p in Path(args.catalog).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        print(f"brandforge demo: {total} images from {args.catalog} (full logs: -v) …", flush=True)
        quiet_prefect_console(AssetProgress(total))
    demo_profile(state, catalog=Path(args.catalog)).save("demo", overwrite=True)
    summary = run_catalog("demo", source=args.catalog, work_dir=str(state / "work"))
    print_summary(summary)
    return 0 if not summary.counts.get("failed") else 1


if __name__ == "__main__":
    sys.exit(main())
