"""The gate report: a table of every variant's scores and the aesthetic histogram."""

from __future__ import annotations

import base64
import io
import re
from urllib.parse import parse_qs, urlsplit

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


def _preview_state(tmp_path, monkeypatch):
    """A state folder whose work, quarantine and gallery are preview roots (tasks/previews.py)."""
    root = tmp_path / "state"
    monkeypatch.setenv("BRANDFORGE_STATE_DIR", str(root))
    monkeypatch.setenv("BRANDFORGE_PREVIEW_SECRET", "report-test")
    monkeypatch.delenv("BRANDFORGE_PREVIEW_ROOTS", raising=False)
    monkeypatch.delenv("BRANDFORGE_PUBLIC_URL", raising=False)
    return root


def test_report_thumbnails_are_signed_preview_links_and_quarantine_links_every_variant(tmp_path, monkeypatch):
    from brandforge.tasks.previews import check_preview

    root = _preview_state(tmp_path, monkeypatch)
    final = root / "work" / "demo" / "k" / "final-0.jpg"
    final.parent.mkdir(parents=True)
    Image.new("RGB", (1024, 683), (200, 90, 40)).save(final)
    held = root / "quarantine" / "demo" / "k2"
    held.mkdir(parents=True)
    variants = []
    for i in range(2):
        Image.new("RGB", (640, 640), (20 * i, 90, 40)).save(held / f"variant-{i}.jpg")
        variants.append(str(held / f"variant-{i}.jpg"))
    shown = outcome("mug.png", [6.2]).model_copy(update={"output_uris": [str(final)]})
    bad = outcome("cat.png", [4.1, 4.3], chosen=None, state="quarantined").model_copy(
        update={"output_uris": variants, "reason": "variant 0: aesthetic 4.1 (>= 5.0)"})
    md = report_markdown("demo", [shown, bad])

    # The image row: a 192 px thumbnail, a signed link to the final output (no data: URI).
    row = re.search(r"\| mug\.png \| !\[mug\.png\]\((http://127\.0\.0\.1:8700/preview\?[^)]+)\) \| published \|", md)
    assert row, md
    q = {k: v[0] for k, v in parse_qs(urlsplit(row.group(1)).query).items()}
    assert q["size"] == "192" and check_preview(q["path"], q["expires"], q["sig"]) == final
    assert "data:image/jpeg" not in md

    # The quarantine list: every variant linked, with the reason.
    section = md[md.index("## Quarantined (1)"):]
    line = next(l for l in section.splitlines() if l.startswith("| cat.png |"))
    # Each variant: a 96 px thumbnail, then a link to its 512 px preview (an image inside a link shows as raw text).
    shown = re.findall(r"!\[(variant-\d\.jpg)\]\((http://[^)]+size=96[^)]*)\) \[(variant-\d\.jpg)\]\((http://[^)]+)\)", line)
    assert [(a, b) for a, _, b, _ in shown] == [("variant-0.jpg", "variant-0.jpg"), ("variant-1.jpg", "variant-1.jpg")]
    assert [parse_qs(urlsplit(u).query)["path"][0] for *_, u in shown] == variants
    assert all("size=" not in u for *_, u in shown)
    assert "aesthetic 4.1 (>= 5.0)" in line


def test_quarantined_variants_outside_the_roots_are_still_listed(tmp_path, monkeypatch):
    _preview_state(tmp_path, monkeypatch)
    gone = outcome("x.png", [4.0], chosen=None, state="quarantined").model_copy(
        update={"output_uris": ["s3://bucket/quarantine/variant-0.jpg"], "reason": "blurred"})
    md = report_markdown("demo", [gone])
    assert "| x.png | `s3://bucket/quarantine/variant-0.jpg` | blurred |" in md
