"""Decisions: best of N, review band, quarantine, and scoring a batch of files with a profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brandforge.models import Candidate, GateScore, GateThresholds, Recipe
from brandforge.tasks.gates.decide import (
    GateReview,
    apply_review,
    decide,
    quarantine_candidates,
    rank_key,
    score_candidates,
)
from brandforge.tasks.gates.duplicates import phash
from tests.gates.images import blank, blurred, demo_photo, over_exposed


def cand(index: int, **scores: tuple[float, float, bool]) -> Candidate:
    """scores: gate=(score, limit, passed)."""
    return Candidate(index=index, path=f"/tmp/v{index}.jpg", raw_path=f"/tmp/r{index}.png", scores=[
        GateScore(gate=g, score=s, limit=lim, threshold=f"{lim}", passed=p, detail="" if p else f"{g} failed")
        for g, (s, lim, p) in scores.items()
    ])


T = GateThresholds()


def test_best_of_n_publishes_the_best_passing_variant():
    variants = [
        cand(0, sharpness=(500, 30, True), aesthetic=(5.5, 5.0, True)),
        cand(1, sharpness=(900, 30, True), aesthetic=(7.2, 5.0, False)),  # best score but fails a gate
        cand(2, sharpness=(80, 30, True), aesthetic=(6.1, 5.0, True)),
        cand(3, sharpness=(10, 30, False), aesthetic=(6.9, 5.0, True)),
    ]
    d = decide(variants, T)
    assert d.outcome == "publish" and d.chosen.index == 2
    scores = d.ledger_scores()
    assert scores["chosen"] == 2 and set(scores) == {"variant-0", "variant-1", "variant-2", "variant-3", "chosen", "failed"}
    assert scores["failed"]["variant-3"] == ["sharpness"]


def test_rank_prefers_aesthetic_then_palette_then_sharpness():
    a = cand(0, aesthetic=(6.0, 5.0, True), palette=(30, 0, True), sharpness=(100, 30, True))
    b = cand(1, aesthetic=(6.0, 5.0, True), palette=(12, 0, True), sharpness=(50, 30, True))
    assert max([a, b], key=rank_key).index == 1
    c = cand(2, sharpness=(400, 30, True))
    d = cand(3, sharpness=(90, 30, True))
    assert max([c, d], key=rank_key).index == 2


def test_no_passing_variant_is_quarantined_with_every_failed_gate_and_score():
    d = decide([cand(0, sharpness=(12.1, 30, False)), cand(1, exposure=(240, 225, False), sharpness=(40, 30, True))], T)
    assert d.outcome == "quarantine" and d.chosen is None
    assert "variant 0: sharpness 12.1" in d.reason and "variant 1: exposure 240" in d.reason
    assert "sharpness 40" not in d.reason


def test_borderline_best_waits_for_review():
    t = GateThresholds(review_band={"aesthetic": 0.3})
    variants = [cand(0, aesthetic=(4.85, 5.0, False)), cand(1, aesthetic=(4.0, 5.0, False))]
    d = decide(variants, t)
    assert d.outcome == "review" and d.chosen.index == 0 and "borderline" in d.reason
    assert "aesthetic 4.85" in d.review_prompt()


def test_a_clear_pass_needs_no_review():
    t = GateThresholds(review_band={"aesthetic": 0.3})
    d = decide([cand(0, aesthetic=(5.1, 5.0, True)), cand(1, aesthetic=(6.4, 5.0, True))], t)
    assert d.outcome == "publish" and d.chosen.index == 1


def test_passing_inside_the_band_is_reviewed_too():
    t = GateThresholds(review_band={"aesthetic": 0.3})
    assert decide([cand(0, aesthetic=(5.1, 5.0, True))], t).outcome == "review"


def test_failure_outside_the_band_is_not_reviewable():
    t = GateThresholds(review_band={"aesthetic": 0.3})
    d = decide([cand(0, aesthetic=(4.9, 5.0, False), sharpness=(3, 30, False))], t)
    assert d.outcome == "quarantine"


def test_review_band_names_known_gates_only():
    with pytest.raises(ValueError, match="review_band names unknown gates"):
        GateThresholds(review_band={"beauty": 1.0})


@pytest.mark.parametrize("answer, outcome, reason", [
    (GateReview(decision="approve", note="fine"), "publish", ""),
    (GateReview(decision="reject", note="logo cut off"), "quarantine", "rejected in review: logo cut off"),
    (GateReview(decision="regenerate", note="warmer light"), "regenerate", "regenerate requested: warmer light"),
    (None, "quarantine", "no decision within 3600 s"),
])
def test_apply_review(answer, outcome, reason):
    t = GateThresholds(review_band={"aesthetic": 0.3})
    d = apply_review(decide([cand(0, aesthetic=(4.9, 5.0, False))], t), answer, t)
    assert d.outcome == outcome and reason in d.reason
    assert d.ledger_scores()["review"]["decision"] == (answer.decision if answer else "reject")
    if outcome == "publish":
        assert d.ledger_scores()["chosen"] == 0


def test_timeout_default_can_approve():
    t = GateThresholds(review_band={"aesthetic": 0.3}, review_default="approve")
    assert apply_review(decide([cand(0, aesthetic=(4.9, 5.0, False))], t), None, t).outcome == "publish"


def test_quarantine_keeps_variants_and_scores_where_a_person_can_look(tmp_path):
    files = []
    for i in range(2):
        p = tmp_path / "work" / f"final-{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        blank().save(p)
        files.append(p)
    d = decide([cand(0, contrast=(0.0, 4.0, False)), cand(1, contrast=(0.1, 4.0, False))], T)
    d = d.model_copy(update={"candidates": [c.model_copy(update={"path": str(files[c.index])}) for c in d.candidates]})
    copies = quarantine_candidates(d, tmp_path / "quarantine" / "acme" / "x")
    assert [Path(c).name for c in copies] == ["variant-0.jpg", "variant-1.jpg"] and all(Path(c).is_file() for c in copies)
    report = json.loads((tmp_path / "quarantine" / "acme" / "x" / "gates.json").read_text())
    assert report["outcome"] == "quarantine" and report["variants"][0]["scores"][0]["gate"] == "contrast"
    assert all(f.is_file() for f in files)  # nothing deleted


def save_variants(folder: Path, images) -> list[Candidate]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, im in enumerate(images):
        path = folder / f"final-{i}.png"
        im.save(path)
        out.append(Candidate(index=i, path=str(path), raw_path=str(path)))
    return out


def test_score_candidates_on_files_picks_the_good_one(demo_profile, tmp_path):
    good = demo_photo("coffee-cup.jpg", (512, 384))
    variants = save_variants(tmp_path / "v", [blurred(good), good, blank(), over_exposed(good)])
    d = score_candidates.fn(variants, demo_profile)
    assert d.outcome == "publish" and d.chosen.index == 1
    failed = d.ledger_scores()["failed"]
    assert "sharpness" in failed["variant-0"] and "contrast" in failed["variant-2"] and "exposure" in failed["variant-3"]
    assert d.phashes[1] == phash(good)
    gates = {s.gate for s in d.chosen.scores}
    assert {"resolution", "file_size", "sharpness", "exposure", "colour_cast", "noise", "colour_band",
            "alpha_hole", "repetition", "duplicate", "palette"} <= gates
    assert "aesthetic" not in gates  # the demo profile has no aesthetic model


def test_score_candidates_quarantines_a_batch_with_no_passing_variant(demo_profile, tmp_path):
    good = demo_photo("coffee-cup.jpg", (512, 384))
    variants = save_variants(tmp_path / "v", [blurred(good), blank(), over_exposed(blurred(good, 3))])
    d = score_candidates.fn(variants, demo_profile)
    assert d.outcome == "quarantine" and "variant 0: sharpness" in d.reason and "variant 1:" in d.reason


def test_score_candidates_checks_structure_only_for_keep_composition(demo_profile, tmp_path):
    good = demo_photo("coffee-cup.jpg", (512, 384))
    source = tmp_path / "source.png"
    good.save(source)
    variants = save_variants(tmp_path / "v", [demo_photo("rocket-launch.jpg", (512, 384))])
    free = score_candidates.fn(variants, demo_profile, Recipe(name="free"), str(source))
    assert free.outcome == "publish" and "structure" not in {s.gate for s in free.chosen.scores}
    keep = score_candidates.fn(variants, demo_profile, Recipe(name="keep", keep_composition=True), str(source))
    assert keep.outcome == "quarantine" and "structure" in keep.reason


def test_score_candidates_rejects_a_duplicate_of_a_published_image(demo_profile, tmp_path):
    from brandforge.models import LedgerEntry

    good = demo_photo("coffee-cup.jpg", (512, 384))
    demo_profile.ledger.record(LedgerEntry(client=demo_profile.client_id, source_uri="earlier.png", state="published", phash=phash(good)))
    variants = save_variants(tmp_path / "v", [good.resize((500, 375))])
    d = score_candidates.fn(variants, demo_profile, source_uri="new.png")
    assert d.outcome == "quarantine" and "near-duplicate" in d.reason
    # The same asset republished (its recipe changed) replaces itself: not a duplicate.
    assert score_candidates.fn(variants, demo_profile, source_uri="earlier.png").outcome == "publish"


def test_the_review_form_shows_the_image(tmp_path):
    import base64
    import io
    import re

    from PIL import Image

    path = tmp_path / "v0.jpg"
    Image.new("RGB", (1024, 1024), (40, 90, 200)).save(path)
    t = GateThresholds(review_band={"aesthetic": 0.3})
    d = decide([cand(0, aesthetic=(4.85, 5.0, False)).model_copy(update={"path": str(path)})], t)
    match = re.search(r"!\[variant 0\]\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", d.review_prompt())
    assert match and max(Image.open(io.BytesIO(base64.b64decode(match.group(1)))).size) == 512


def test_the_review_form_shows_the_variant_beside_its_source_with_signed_links(tmp_path, monkeypatch):
    import re
    from urllib.parse import parse_qs, urlsplit

    from PIL import Image

    from brandforge.tasks.previews import check_preview

    root = tmp_path / "state"
    monkeypatch.setenv("BRANDFORGE_STATE_DIR", str(root))
    monkeypatch.setenv("BRANDFORGE_PREVIEW_SECRET", "review-test")
    monkeypatch.delenv("BRANDFORGE_PREVIEW_ROOTS", raising=False)
    monkeypatch.delenv("BRANDFORGE_PREVIEW_TTL_S", raising=False)
    (root / "work" / "demo").mkdir(parents=True)
    source, variant = root / "work" / "demo" / "source.png", root / "work" / "demo" / "final-0.jpg"
    Image.new("RGB", (600, 400), (90, 90, 90)).save(source)
    Image.new("RGB", (1024, 683), (40, 90, 200)).save(variant)
    t = GateThresholds(review_band={"aesthetic": 0.3}, review_timeout_s=7200)
    d = decide([cand(0, aesthetic=(4.85, 5.0, False)).model_copy(update={"path": str(variant)}),
                cand(1, aesthetic=(3.0, 5.0, False))], t)
    d = d.model_copy(update={"source_path": str(source), "preview_ttl_s": t.review_timeout_s})
    prompt = d.review_prompt()
    row = re.search(r"\| !\[source\]\((http://[^)]+)\) \| !\[variant 0\]\((http://[^)]+)\) \|", prompt)
    assert row and "| source | variant 0 (for review) |" in prompt, prompt
    for url, path in zip(row.groups(), (source, variant)):
        q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert check_preview(q["path"], q["expires"], q["sig"]) == path
        assert 7000 < int(q["expires"]) - __import__("time").time() <= 7200  # valid as long as the review may wait
    assert "| aesthetic | **NO** | 4.85 | 5.0 |" in prompt and "- **aesthetic**: aesthetic failed" in prompt
    large = re.search(r"\n!\[variant 0\]\((http://[^)]+)\)", prompt)  # and the variant alone, at 512 px
    assert large and "size=" not in large.group(1) and "size=192" in row.group(2)
    assert "variant 1: aesthetic 3.0" in prompt


def test_score_candidates_keeps_the_source_for_the_review_form(tmp_path, demo_profile):
    from PIL import Image

    src = tmp_path / "source.png"
    Image.new("RGB", (400, 300), (120, 80, 60)).save(src)
    v = tmp_path / "v0.png"
    demo_photo().save(v)
    d = score_candidates.fn([Candidate(index=0, path=str(v), raw_path=str(v))], demo_profile, source_path=str(src))
    assert d.source_path == str(src) and d.preview_ttl_s == demo_profile.gates.review_timeout_s
