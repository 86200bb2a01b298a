"""The gate report: a table of every variant's scores and the aesthetic histogram."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image

from brandforge.models import AssetOutcome
from brandforge.tasks.gates.report import MIN_HISTOGRAM_ASSETS, histogram_bins, histogram_png, report_markdown, score_rows


def outcome(name: str, aesthetic: list[float], chosen: int | None = 0, state: str = "published") -> AssetOutcome:
    scores: dict = {f"variant-{i}": {"sharpness": 100.0 + i, "aesthetic": a} for i, a in enumerate(aesthetic)}
    scores["failed"] = {f"variant-{i}": (["aesthetic"] if a < 5 else []) for i, a in enumerate(aesthetic)}
    if chosen is not None:
        scores["chosen"] = chosen
    return AssetOutcome(client="acme", source_uri=f"/c/{name}", name=name, state=state, scores=scores)


def test_score_rows_one_per_variant_with_the_same_columns():
    rows = score_rows([outcome("a.png", [5.5, 6.1], chosen=1), AssetOutcome(client="acme", source_uri="x", name="x", state="failed")])
    assert len(rows) == 2
    assert rows[1]["chosen"] == "yes" and rows[0]["chosen"] == ""
    assert set(rows[0]) == set(rows[1]) == {"asset", "variant", "chosen", "state", "sharpness", "aesthetic"}


def test_histogram_bins_cover_every_value():
    bins = histogram_bins([4.2, 4.4, 5.0, 6.74])
    assert bins[0] == (4.0, 2) and sum(c for _, c in bins) == 4 and bins[-1][0] == 6.5


def test_histogram_png_is_an_image():
    im = Image.open(io.BytesIO(histogram_png([4.2, 5.1, 5.3, 6.0], threshold=5.0)))
    assert im.format == "PNG" and im.size == (480, 240)


def test_report_has_an_inline_histogram_with_enough_assets():
    outcomes = [outcome(f"{i}.png", [4.0 + i * 0.4, 5.0 + i * 0.3]) for i in range(MIN_HISTOGRAM_ASSETS)]
    md = report_markdown("acme", outcomes, threshold=5.0)
    match = re.search(r"!\[aesthetic score histogram\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert match and Image.open(io.BytesIO(base64.b64decode(match.group(1)))).format == "PNG"
    assert "| aesthetic |" in md and "| score from | variants |" in md


def test_report_without_enough_assets_says_so():
    assert "only 1 asset(s) scored" in report_markdown("acme", [outcome("a.png", [5.0])])
    no_aesthetic = AssetOutcome(client="acme", source_uri="x", name="x", state="published", scores={"variant-0": {"sharpness": 50.0}})
    assert "no aesthetic model" in report_markdown("acme", [no_aesthetic])


def test_report_shows_each_image_as_a_thumbnail_with_its_scores(tmp_path):
    path = tmp_path / "final-0.jpg"
    Image.new("RGB", (1024, 683), (200, 90, 40)).save(path)
    shown = outcome("mug.png", [6.2]).model_copy(update={"output_uris": [str(path)]})
    remote = outcome("remote.png", [5.5]).model_copy(update={"output_uris": ["s3://bucket/out/remote.jpg"]})
    md = report_markdown("acme", [shown, remote])
    match = re.search(r"\| mug\.png \| !\[mug\.png\]\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\) \| published \| aesthetic 6\.2 · sharpness 100 \|", md)
    assert match, md[:600]
    thumb = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert thumb.format == "JPEG" and max(thumb.size) == 192
    assert "| remote.png | `s3://bucket/out/remote.jpg` |" in md  # no preview of a remote image, but where it is
