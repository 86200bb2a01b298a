"""The `brandforge` command: audit one published image, export the ledger, explain a routing decision.

    brandforge audit <published URL | generation key | ledger row id | remote id> --client acme [--artifact]
    brandforge export --client acme --since 2026-11-01 --until 2026-12-01 --format csv > november.csv
    brandforge route --explain <asset uri or name> --client acme [--source FOLDER] [--now 2026-12-24T08:00+01:00]
    brandforge replay <ledger row id | generation key | published URL> --client acme [--allow-provider-call]

`replay` rebuilds a published image from its ledger row alone (tasks/replay.py) and compares its bytes
with the published file: exit 0 identical, 1 different, 2 cannot replay, 3 a provider call would be
needed and --allow-provider-call was not given, 4 the logo changed.

`route --explain` reads the client's profile (Prefect API), its catalog and ledger, and prints the
rule that matched (and why the others did not), the recipe, provider and model, the rendered prompt,
the seed and the estimated cost; nothing is generated, paid or recorded.

Both read the ledger only (never a CMS, never a secret) and show one client's
rows: `--client NAME` is required, or `--all-clients` for an operator who may
see every tenant. The ledger is the one at `--ledger` (a SQLAlchemy URL; a
password in it is kept secret, or give it in `$BRANDFORGE_LEDGER_PASSWORD`),
else the one of client profile `--client` (needs the Prefect API), else
`$BRANDFORGE_LEDGER_URL`, else the default `sqlite:///.brandforge/ledger.db`
that `make run` writes. No output ever carries the ledger's password.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from datetime import date, datetime, time, timedelta, timezone
from typing import TextIO

# Offline by default: a temporary Prefect server (to read a --client profile) must not try to send telemetry.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from brandforge.blocks.ledger import Ledger  # noqa: E402 - after the environment default above
from brandforge.flows.audit import artifact_key, audit_image, render_lineage  # noqa: E402
from brandforge.models import LedgerEntry  # noqa: E402

EXPORT_COLUMNS = ["id", *LedgerEntry.model_fields]


def parse_when(value: str, *, end: bool = False) -> datetime:
    """A date (YYYY-MM-DD, whole day; as --until the day is included) or an ISO timestamp; naive means UTC."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            when = datetime.combine(day + timedelta(days=1) if end else day, time.min)
        else:
            when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD) or ISO timestamp (YYYY-MM-DDTHH:MM[:SS][+HH:MM])") from exc
    # The ledger stores UTC (SQLite keeps no offset): compare in UTC.
    return when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)


def resolve_ledger(args: argparse.Namespace) -> Ledger:
    password = os.environ.get("BRANDFORGE_LEDGER_PASSWORD") or None
    if args.ledger:
        return Ledger(url=args.ledger, password=password)
    if args.client:
        from brandforge.tasks.profiles import load_profile

        return load_profile(args.client).ledger
    return Ledger(url=os.environ.get("BRANDFORGE_LEDGER_URL") or Ledger().url, password=password)


# Cells that hold lists: one cell, items separated by spaces (URIs and ids have none).
LIST_COLUMNS = ("job_ids", "output_uris")
# Dict fields spread into one column per key, named prefix.key, so a spreadsheet filters on them.
SPREAD_COLUMNS = {"params": "param", "timings": "seconds", "remote_ids": "remote"}


def chosen_scores(scores: dict) -> dict[str, object]:
    """The scores a person filters on: the chosen variant's (or, with none chosen, the first one's) metrics,
    which variant that was and the gates it failed; other scalar scores as they are."""
    variants = sorted(k for k, v in scores.items() if k.startswith("variant-") and isinstance(v, dict))
    chosen = scores.get("chosen")
    key = f"variant-{chosen}" if isinstance(chosen, int) and f"variant-{chosen}" in scores else (variants[0] if variants else None)
    flat: dict[str, object] = {}
    if key:
        flat["score.variant"] = key.removeprefix("variant-")
        flat.update({f"score.{metric}": value for metric, value in scores[key].items()})
        failed = (scores.get("failed") or {}).get(key)
        if failed is not None:
            flat["score.failed_gates"] = " ".join(str(f) for f in failed)
    flat["score.variants"] = len(variants)
    for k, v in scores.items():
        if k not in ("chosen", "failed") and not k.startswith("variant-"):
            flat[f"score.{k}"] = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
    return flat


def flat_record(record: dict) -> dict[str, object]:
    """One ledger row as spreadsheet cells: no JSON in any cell a person would filter on."""
    flat: dict[str, object] = {}
    for k, v in record.items():
        if k in LIST_COLUMNS:
            flat[k] = " ".join(str(x) for x in v)
        elif k == "scores":
            flat.update(chosen_scores(v))
        elif k in SPREAD_COLUMNS:
            for sub, value in v.items():
                cell = " ".join(map(str, value)) if isinstance(value, list) else value
                flat[f"{SPREAD_COLUMNS[k]}.{sub}"] = json.dumps(cell, sort_keys=True) if isinstance(cell, dict) else cell
        elif isinstance(v, dict):  # the recipe snapshot: one JSON cell
            flat[k] = json.dumps(v, sort_keys=True)
        else:
            flat[k] = v
    return flat


def export_rows(rows: list[tuple[int, LedgerEntry]], fmt: str, out: TextIO) -> None:
    records = [{"id": row_id, **entry.model_dump(mode="json")} for row_id, entry in rows]
    if fmt == "json":
        json.dump(records, out, indent=2, sort_keys=False)
        out.write("\n")
        return
    flat = [flat_record(r) for r in records]
    fixed = [c for c in EXPORT_COLUMNS if c != "scores" and c not in SPREAD_COLUMNS]
    spread = sorted({k for r in flat for k in r} - set(fixed), key=lambda c: (c.split(".")[0] != "score", c))
    writer = csv.DictWriter(out, fieldnames=fixed + spread, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(flat)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brandforge", description="Audit, export and replay brandforge's ledger.")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--ledger", help="SQLAlchemy URL of the ledger (default: $BRANDFORGE_LEDGER_URL or sqlite:///.brandforge/ledger.db)")
    where.add_argument("--client", help="show only this client's rows; without --ledger, read its ClientProfile's ledger")
    where.add_argument("--all-clients", action="store_true", help="show every client's rows (operators only)")
    sub = parser.add_subparsers(dest="command", required=True)
    audit = sub.add_parser("audit", parents=[where], help="print the full lineage of one published image")
    audit.add_argument("ref", help="published URL, generation key (or 8+ character prefix), ledger row id, or a target's remote id/URL")
    audit.add_argument("--artifact", action="store_true", help="also store the lineage as a Prefect markdown artifact (audit-<key>)")
    export = sub.add_parser("export", parents=[where], help="export ledger rows of a date range as CSV or JSON")
    export.add_argument("--since", type=parse_when, help="first day or instant included (UTC unless an offset is given)")
    export.add_argument("--until", type=lambda v: parse_when(v, end=True), help="last day included, or an instant excluded")
    export.add_argument("--format", choices=["csv", "json"], default="csv", help="csv (default) or json")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    route = sub.add_parser("route", help="explain how one asset is routed (rule, recipe, provider, prompt, seed, cost)")
    route.add_argument("--explain", required=True, metavar="ASSET", help="the asset's URI, its path in the catalog, or its file name")
    route.add_argument("--client", required=True, help="the client whose ClientProfile routes it")
    route.add_argument("--source", help="catalog folder to read the asset from (default: the profile's source storage)")
    route.add_argument("--now", type=parse_when, help="the clock the prompt's context reads (ISO timestamp; default: now)")
    replay = sub.add_parser("replay", parents=[where], help="rebuild a published image from its ledger row; do the bytes match?")
    replay.add_argument("ref", help="ledger row id, generation key (or 8+ character prefix) or published URL")
    replay.add_argument("--allow-provider-call", action="store_true",
                        help="when the generation is not in the store, send the same request to the same provider (costs money)")
    replay.add_argument("--store", help="the generation store folder (default: the one the row recorded)")
    replay.add_argument("--out", default=".brandforge/replay", help="where the rebuilt files go (default: .brandforge/replay)")
    return parser


# `brandforge replay` exit codes, by what happened.
REPLAY_IDENTICAL, REPLAY_DIFFERENT, REPLAY_CANNOT, REPLAY_NEEDS_PROVIDER, REPLAY_LOGO_CHANGED = 0, 1, 2, 3, 4


def main(argv: list[str] | None = None) -> int:
    # Loading a profile emits a Prefect "block loaded" event; its delivery at exit is not the user's concern,
    # nor is the temporary server's start and stop: the command's own output is what it prints.
    # (The events worker drains at interpreter exit, after this returns: its logger stays quiet.)
    logging.getLogger("EventsWorker").setLevel(logging.ERROR)
    prefect_logger = logging.getLogger("prefect")
    before = prefect_logger.level
    prefect_logger.setLevel(logging.WARNING)
    try:
        return run_command(argv)
    finally:
        prefect_logger.setLevel(before)


def run_command(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "route":
        return explain_route(args)
    if bool(args.client) == bool(args.all_clients):
        parser.error(f"{args.command}: name the client whose rows to show (--client NAME), or give --all-clients")
    only = None if args.all_clients else args.client
    ledger = resolve_ledger(args)
    if args.command == "replay":
        return replay_command(args, ledger, only)
    if args.command == "audit":
        rows = ledger.lineage(args.ref, client=only)
        if not rows:
            whose = "any client" if only is None else f"client {only!r}"
            print(f"brandforge audit: nothing of {whose} in the ledger at {ledger.url} matches {args.ref!r} "
                  "(give a published URL, a generation key, a ledger row id or a remote id)", file=sys.stderr)
            return 1
        if args.artifact:
            print(audit_image(args.ref, client=only, ledger=ledger))
            print(f"\nPrefect artifact: {artifact_key(rows)}", file=sys.stderr)
        else:
            print(render_lineage(rows))
        return 0
    if args.since and args.until and args.until <= args.since:
        print(f"brandforge export: --until ({args.until:%Y-%m-%d %H:%M}) must be after --since ({args.since:%Y-%m-%d %H:%M})", file=sys.stderr)
        return 2
    rows = ledger.rows(client=only, since=args.since, until=args.until)
    if args.output:
        with open(args.output, "w", newline="") as out:
            export_rows(rows, args.format, out)
        print(f"brandforge export: {len(rows)} rows written to {args.output}", file=sys.stderr)
    else:
        export_rows(rows, args.format, sys.stdout)
    return 0


def replay_command(args: argparse.Namespace, ledger: Ledger, client: str | None) -> int:
    from brandforge.models import BrandforgeError
    from brandforge.tasks.replay import LogoChanged, ProviderCallRefused, replay_image

    try:
        report = replay_image(args.ref, ledger=ledger, client=client, allow_provider_call=args.allow_provider_call,
                              out_dir=args.out, store_dir=args.store)
    except ProviderCallRefused as exc:
        print(f"brandforge replay: refused: {exc}", file=sys.stderr)
        return REPLAY_NEEDS_PROVIDER
    except LogoChanged as exc:
        print(f"brandforge replay: {exc}", file=sys.stderr)
        return REPLAY_LOGO_CHANGED
    except BrandforgeError as exc:  # no such row, no snapshot, a source gone, a chain or provider refusal
        print(f"brandforge replay: {exc}", file=sys.stderr)
        return REPLAY_CANNOT
    print(report.render())
    if report.published_sha256 is None:
        return REPLAY_CANNOT
    return REPLAY_IDENTICAL if report.identical else REPLAY_DIFFERENT


def explain_route(args: argparse.Namespace) -> int:
    from prefect.filesystems import LocalFileSystem

    from brandforge.models import BrandforgeError
    from brandforge.tasks.explain import explain
    from brandforge.tasks.profiles import load_profile

    try:
        profile = load_profile(args.client)
        storage = LocalFileSystem(basepath=str(os.path.abspath(args.source))) if args.source else None
        print(explain(args.explain, profile, storage=storage, now=args.now))
    except BrandforgeError as exc:
        print(f"brandforge route: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # A command line: the temporary server's stop message at exit is noise too.
    logging.getLogger("prefect").setLevel(logging.WARNING)
    sys.exit(main())
