"""The gate report of a catalog run: a table of every variant's scores, and a histogram.

Left on the catalog run as Prefect artifacts: a table (one row per variant:
asset, variant, chosen?, final state, each gate's score) and a markdown
report with the aesthetic-score histogram drawn as a PNG inline (a data: URI,
which the Prefect UI's markdown renders; `create_image_artifact` would need a
public URL) plus the same bins as a text table, when enough assets have an
aesthetic score. The report opens with each asset's image as a thumbnail
beside its state and its chosen variant's main scores, so a person sees what
the gates judged without leaving the run page; the quarantined assets follow,
each with every variant linked. Thumbnails are signed preview links served by
the webhook gateway (tasks/previews.py); a file outside the preview roots is
inlined as a small JPEG data: URI instead.
"""

from __future__ import annotations

import base64
import io
import math

from PIL import Image, ImageDraw

from brandforge.models import AssetOutcome
from brandforge.tasks.previews import data_uri, markdown_image, markdown_link

MIN_HISTOGRAM_ASSETS = 5
BIN_WIDTH = 0.5
THUMBNAIL_PX = 192
# Inline thumbnails cost ~6-10 kB each in the artifact: a large catalog's report shows the first ones.
MAX_THUMBNAILS = 40
# The scores shown beside a thumbnail, when the variant has them.
HEADLINE_SCORES = ("aesthetic", "sharpness", "exposure", "contrast", "noise", "palette")


def score_rows(outcomes: list[AssetOutcome]) -> list[dict]:
    """One row per scored variant, every row with the same columns (the UI's table needs them)."""
    gates: list[str] = []
    variants = []
    for o in outcomes:
        chosen = o.scores.get("chosen")
        for key, scores in o.scores.items():
            if not key.startswith("variant-") or not isinstance(scores, dict):
                continue
            index = int(key.removeprefix("variant-"))
            variants.append((o, index, index == chosen, scores))
            gates += [g for g in scores if g not in gates]
    rows = []
    for o, index, chosen, scores in variants:
        row = {"asset": o.name, "variant": index, "chosen": "yes" if chosen else "", "state": o.state}
        row.update({g: scores.get(g) for g in gates})
        rows.append(row)
    return rows


def aesthetic_scores(outcomes: list[AssetOutcome]) -> tuple[list[float], int]:
    """(aesthetic score of every variant, number of assets that have one)."""
    values, assets = [], 0
    for o in outcomes:
        found = [s["aesthetic"] for k, s in o.scores.items()
                 if k.startswith("variant-") and isinstance(s, dict) and isinstance(s.get("aesthetic"), (int, float))]
        values += found
        assets += bool(found)
    return values, assets


def histogram_bins(values: list[float], width: float = BIN_WIDTH) -> list[tuple[float, int]]:
    """[(bin start, count)] covering every value, bins `width` wide on a grid of `width`."""
    if not values:
        return []
    lo = math.floor(min(values) / width) * width
    n = max(1, math.floor((max(values) - lo) / width) + 1)
    counts = [0] * n
    for v in values:
        counts[min(n - 1, int((v - lo) // width))] += 1
    return [(round(lo + i * width, 3), c) for i, c in enumerate(counts)]


def histogram_png(values: list[float], threshold: float | None = None, size: tuple[int, int] = (480, 240)) -> bytes:
    """A bar chart of `values` (bins BIN_WIDTH wide) with the threshold as a red line, as PNG bytes."""
    bins = histogram_bins(values)
    w, h = size
    margin_l, margin_b, margin_t = 30, 24, 10
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    top = max((c for _, c in bins), default=1)
    plot_w, plot_h = w - margin_l - 10, h - margin_b - margin_t
    bar_w = plot_w / max(1, len(bins))
    lo = bins[0][0] if bins else 0.0
    for i, (start, count) in enumerate(bins):
        x0 = margin_l + i * bar_w
        bar_h = plot_h * count / top
        draw.rectangle([x0 + 1, h - margin_b - bar_h, x0 + bar_w - 1, h - margin_b], fill=(43, 111, 158))
        draw.text((x0 + 2, h - margin_b + 4), f"{start:g}", fill="black")
        if count:
            draw.text((x0 + 2, h - margin_b - bar_h - 12), str(count), fill="black")
    draw.line([margin_l, h - margin_b, w - 10, h - margin_b], fill="black")
    if threshold is not None and bins:
        x = margin_l + (threshold - lo) / BIN_WIDTH * bar_w
        if margin_l <= x <= w - 10:
            draw.line([x, margin_t, x, h - margin_b], fill=(200, 40, 40), width=2)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def thumbnail_data_uri(uri: str, size: int = THUMBNAIL_PX) -> str | None:
    """A local image (a path or file:// URI) as a small inline data: URI; None for remote or unreadable ones."""
    return None if "://" in uri.removeprefix("file://") else data_uri(uri, size)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def images_section(outcomes: list[AssetOutcome]) -> list[str]:
    """Markdown rows: each asset's (first) output as a thumbnail, its state and its chosen variant's headline scores."""
    lines = ["## Images", "", "| asset | image | state | scores |", "|---|---|---|---|"]
    for o in outcomes[:MAX_THUMBNAILS]:
        uri = o.output_uris[0] if o.output_uris else None
        image = markdown_image(uri, o.name, size=THUMBNAIL_PX) or (f"`{_cell(uri)}`" if uri else "—")
        chosen = o.scores.get("chosen")
        variant = o.scores.get(f"variant-{chosen if isinstance(chosen, int) else 0}") or {}
        scores = " · ".join(f"{g} {variant[g]:.4g}" for g in HEADLINE_SCORES if isinstance(variant.get(g), (int, float)))
        lines.append(f"| {_cell(o.name)} | {image} | {_cell(o.label[:120])} | {scores or '—'} |")
    if len(outcomes) > MAX_THUMBNAILS:
        lines.append(f"| … | {len(outcomes) - MAX_THUMBNAILS} more asset(s): see the table artifact | | |")
    return lines + [""]


def variant_cell(uri: str) -> str:
    """One quarantined variant: a small thumbnail and a link to its 512 px preview (or its path)."""
    name = uri.rsplit("/", 1)[-1]
    link = markdown_link(uri, name)
    if not link:
        return f"`{_cell(uri)}`"
    return f"{markdown_image(uri, name, size=96)} {link}"


def quarantine_section(outcomes: list[AssetOutcome]) -> list[str]:
    """Markdown: every quarantined asset with each of its variants (the quarantine copies) linked, and why."""
    held = [o for o in outcomes if o.state == "quarantined"]
    if not held:
        return []
    lines = [f"## Quarantined ({len(held)})", "", "| asset | variants | why |", "|---|---|---|"]
    for o in held[:MAX_THUMBNAILS]:
        variants = [variant_cell(uri) for uri in o.output_uris]
        lines.append(f"| {_cell(o.name)} | {' '.join(variants) or '—'} | {_cell(o.reason[:300]) or '—'} |")
    return lines + [""]


def report_markdown(client: str, outcomes: list[AssetOutcome], threshold: float | None = None) -> str:
    """The gate report: per-gate failure counts, and the aesthetic histogram when enough assets have a score."""
    rows = score_rows(outcomes)
    lines = [f"# Gate report: {client}", "", f"{len(rows)} variant(s) of {len(outcomes)} asset(s) scored.", ""]
    if outcomes:
        lines += images_section(outcomes) + quarantine_section(outcomes)
    failures: dict[str, int] = {}
    for o in outcomes:
        for gates in (o.scores.get("failed") or {}).values():
            for gate in gates:
                failures[gate] = failures.get(gate, 0) + 1
    if failures:
        lines += ["| gate | variants that failed it |", "|---|---|"]
        lines += [f"| {g} | {n} |" for g, n in sorted(failures.items(), key=lambda kv: -kv[1])] + [""]
    values, assets = aesthetic_scores(outcomes)
    if assets >= MIN_HISTOGRAM_ASSETS:
        png = base64.b64encode(histogram_png(values, threshold)).decode()
        lines += [f"## Aesthetic scores ({len(values)} variants, {assets} assets)", "",
                  f"![aesthetic score histogram](data:image/png;base64,{png})", "",
                  "| score from | variants |", "|---|---|"]
        lines += [f"| {start:g} | {count} |" for start, count in histogram_bins(values)]
    elif values:
        lines += [f"Aesthetic histogram: only {assets} asset(s) scored (needs {MIN_HISTOGRAM_ASSETS})."]
    else:
        lines += ["No aesthetic scores (the profile has no aesthetic model)."]
    return "\n".join(lines)


def create_gate_report(client: str, outcomes: list[AssetOutcome], key_prefix: str, threshold: float | None = None) -> None:
    """Leave the gate report on the current run: a table artifact and a markdown artifact."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = score_rows(outcomes)
    if rows:
        create_table_artifact(rows, key=f"{key_prefix}-gate-scores", description=f"{client}: every variant's gate scores")
    create_markdown_artifact(report_markdown(client, outcomes, threshold), key=f"{key_prefix}-gate-report",
                             description=f"{client}: gate report")
