"""Audit: the lineage of one published image, as text and as a Prefect markdown artifact.

Reads the ledger only: source, keys, recipe, provider jobs, parameters, seed,
scores, target ids and URLs, cost and every earlier attempt, never a secret.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from brandforge.models import LedgerEntry


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str) if value else "—"
    return "—" if value in (None, "") else str(value)


def render_lineage(rows: list[tuple[int, LedgerEntry]]) -> str:
    """The full story of one image, oldest attempt first, published row in full."""
    published = [(i, e) for i, e in rows if e.state == "published"]
    main_id, main = published[-1] if published else rows[-1]
    lines = [
        f"Image {main.published_url or '(not published)'}",
        f"  client           {main.client}",
        f"  state            {main.state}{': ' + main.reason if main.reason else ''}   (ledger row {main_id}, {main.created_at:%Y-%m-%d %H:%M:%S %Z})",
        "Source",
        f"  uri              {main.source_uri}",
        f"  source key       {_fmt(main.source_key)}",
        "Recipe and generation",
        f"  recipe           {_fmt(main.recipe)}  (recipe key {_fmt(main.recipe_key)})",
        f"  generation key   {_fmt(main.generation_key)}",
        f"  provider / model {_fmt(main.provider)} / {_fmt(main.model)}",
        f"  provider jobs    {', '.join(main.job_ids) or '—'}",
        f"  seed             {_fmt(main.seed)}",
        f"  parameters       {_fmt(main.params)}",
        f"  outputs          {', '.join(main.output_uris) or '—'}",
        "Quality",
        f"  scores           {_fmt(main.scores)}",
        f"  perceptual hash  {_fmt(main.phash)}",
        "Publish",
        f"  target           {_fmt(main.target)}",
        f"  url              {_fmt(main.published_url)}",
        *(f"  {k:<16} {_fmt(v)}" for k, v in sorted(main.remote_ids.items())),
        "Cost and time",
        f"  cost             ${main.cost_usd:.4f}",
        f"  timings (s)      {_fmt(main.timings)}",
        f"  flow run         {_fmt(main.flow_run_id)}",
    ]
    snap = main.recipe_snapshot
    if snap is not None:  # what the keys stood for, as values (`brandforge replay` rebuilds from them)
        lines += [
            "What decided the image",
            f"  template         {_fmt(snap.template)}",
            f"  provider block   {snap.provider.ref} → {snap.provider.block_type}"
            f"{' (' + snap.provider.block_document + ')' if snap.provider.block_document else ''}, model {_fmt(snap.provider.model)}",
            f"  wire parameters  {_fmt(snap.provider.wire)}",
            *([f"  reported seed    {snap.reported_seed}"] if snap.reported_seed is not None else []),
            f"  chain            {_fmt([s.model_dump() for s in snap.chain])}",
            f"  palette          {', '.join(snap.palette) or '—'}",
            f"  logo             {snap.logo.path + ' (sha256 ' + snap.logo.sha256 + ')' if snap.logo else '—'}",
        ]
    replaced = [(i, e) for i, e in rows if e.state == "replaced"]
    if replaced:
        # The asset republished at its target (a new recipe, new bytes): each row's entry replaced by the next.
        lines.append("Replacements (the asset republished at its target)")
        for row_id, e in replaced:
            lines.append(f"  #{row_id:<6} {e.created_at:%Y-%m-%d %H:%M:%S}  {_fmt(e.published_url)}  → replaced by #{e.replaced_by}")
        if published:
            lines.append(f"  #{main_id:<6} {main.created_at:%Y-%m-%d %H:%M:%S}  {_fmt(main.published_url)}  (current)")
    if len(rows) > 1:
        lines.append(f"History ({len(rows)} ledger rows)")
        for row_id, e in rows:
            label = e.state + (f": {e.reason}" if e.reason else "")
            lines.append(f"  #{row_id:<6} {e.created_at:%Y-%m-%d %H:%M:%S}  {label[:110]}  ${e.cost_usd:.4f}")
    return "\n".join(lines)


def artifact_key(rows: list[tuple[int, LedgerEntry]]) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    row_id, entry = rows[-1]
    return f"audit-{(entry.generation_key or f'row-{row_id}')[:16]}".lower()


@task(name="audit-artifact")
def publish_lineage_artifact(rows: list[tuple[int, LedgerEntry]]) -> str:
    """Store the lineage as a markdown artifact beside the runs in the Prefect UI; returns its key."""
    key = artifact_key(rows)
    entry = rows[-1][1]
    create_markdown_artifact(
        markdown=f"```\n{render_lineage(rows)}\n```", key=key,
        description=f"Lineage of {entry.published_url or entry.source_uri}",
    )
    return key
