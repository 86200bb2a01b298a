"""Score every candidate with every gate and decide what happens to the asset.

- Scoring: technical, artifact, duplicate and brand gates on each variant (cheap,
  numpy), the aesthetic gate on all variants in one batch (the profile's
  `AestheticModel`, when it has one). Every score is recorded.
- Best of N: among variants that pass every gate clearly, the best wins —
  highest aesthetic score first, then closest to the brand palette, then most
  structure kept, then sharpest (`rank_key`).
- Human in the loop: when no variant passes clearly but the best one is
  borderline — every failed gate, and at least one gate, within
  `GateThresholds.review_band` of its threshold — the flow pauses for a person
  (`GateReview`, a Prefect RunInput form: approve / reject / regenerate with a
  note). Nobody answering in time means the profile's `review_default`.
- Quarantine: no passing variant ends `quarantined` with each failed gate and its
  score; the variants and a `gates.json` are copied to a quarantine folder
  where a person can look (nothing is deleted).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

from PIL import Image
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import BaseModel, Field

from brandforge.blocks.client_profile import ClientProfile
from brandforge.models import Candidate, GateScore, GateThresholds, Recipe
from brandforge.tasks.cpu import cpu_slot
from brandforge.tasks.gates.aesthetic import score_aesthetic
from brandforge.tasks.gates.artifacts import artifact_scores
from brandforge.tasks.gates.brand import brand_scores
from brandforge.tasks.previews import default_ttl_s, markdown_image
from brandforge.tasks.gates.duplicates import check_duplicate, phash
from brandforge.tasks.gates.technical import technical_scores, working_copy

Outcome = Literal["publish", "review", "quarantine", "regenerate"]


class GateReview(RunInput):
    """The form a reviewer fills in the Prefect UI to resume a paused asset."""

    decision: Literal["approve", "reject", "regenerate"] = Field(
        "reject", description="approve: publish this variant; reject: quarantine it; regenerate: try again on the next run.",
    )
    note: str = Field("", description="Why (kept in the ledger); for regenerate, what to change.")


REVIEW_PREVIEW_PX = 512
REVIEW_SIDE_PX = 192  # source and variant side by side fit the Prefect UI's resume form (~470 px wide)


class GateDecision(BaseModel):
    """What the gates decided for one asset: every scored variant and what happens next."""

    outcome: Outcome
    candidates: list[Candidate]
    chosen: Candidate | None = Field(None, description="The variant to publish (outcome publish) or to review (outcome review).")
    reason: str = Field("", description="Why an asset is quarantined, regenerated or waits for review.")
    phashes: dict[int, str] = Field(default_factory=dict, description="Variant index -> pHash, recorded for the published one.")
    review: GateReview | None = None
    source_path: str | None = Field(None, description="The loaded source, shown beside the variant in the review form.")
    preview_ttl_s: int | None = Field(None, description="How long the review form's image links stay valid (the review timeout).")

    def ledger_scores(self) -> dict:
        """{'variant-0': {gate: score}, …, 'failed': {'variant-0': [gate, …]}, 'chosen': i}: every score, as the ledger keeps them."""
        scores: dict = {f"variant-{c.index}": {s.gate: s.score for s in c.scores} for c in self.candidates}
        scores["failed"] = {f"variant-{c.index}": [s.gate for s in c.scores if not s.passed] for c in self.candidates}
        if self.chosen is not None and self.outcome == "publish":
            scores["chosen"] = self.chosen.index
        if self.review is not None:
            scores["review"] = self.review.model_dump(include={"decision", "note"})
        return scores

    def review_prompt(self, ttl_s: int | None = None) -> str:
        """What the reviewer sees above the form: the borderline variant beside its source, and its scores.

        Images are signed preview links valid `ttl_s` seconds (default: as long as the review may wait, at least
        the preview default), or small inline copies of files outside the preview roots."""
        c = self.chosen
        if c is None:
            return "No variant to review."
        ttl = ttl_s if ttl_s is not None else max(default_ttl_s(), self.preview_ttl_s or 0)
        variant = markdown_image(c.path, f"variant {c.index}", size=REVIEW_SIDE_PX, ttl_s=ttl)
        source = markdown_image(self.source_path, "source", size=REVIEW_SIDE_PX, ttl_s=ttl) if self.source_path else ""
        large = markdown_image(c.path, f"variant {c.index}", size=REVIEW_PREVIEW_PX, ttl_s=ttl)
        lines = [f"**{self.reason}**. Approve to publish it, reject to quarantine it, or ask for a regeneration.", ""]
        if source and variant:  # side by side, small enough for the form's width; then the variant itself, larger
            lines += [f"| source | variant {c.index} (for review) |", "|---|---|", f"| {source} | {variant} |", ""]
        if large:
            lines += [f"Variant {c.index}:", "", large, ""]
        # Narrow columns, the verdict second: the form is too narrow for a wide table. Failures' details follow.
        lines += ["| gate | passed | score | threshold |", "|---|---|---|---|"]
        lines += [f"| {s.gate} | {'yes' if s.passed else '**NO**'} | {s.score} | {s.threshold} |" for s in c.scores]
        lines += [""] + [f"- **{s.gate}**: {s.detail}" for s in c.scores if not s.passed and s.detail]
        lines += ["", f"Image: `{c.path}`"]
        others = [o for o in self.candidates if o.index != c.index]
        if others:
            lines += ["", "Other variants: " + "; ".join(
                f"variant {o.index}: " + (", ".join(f"{s.gate} {s.score}" for s in o.scores if not s.passed) or "passed")
                for o in others)]
        return "\n".join(lines)


# --------------------------------------------------------------------------- scoring


def score_image(
    image: Image.Image,
    t: GateThresholds,
    *,
    file_bytes: int | None = None,
    raw: Image.Image | None = None,
    palette: list[str] | tuple[str, ...] = (),
    source: Image.Image | None = None,
    published: list[str] | None = None,
) -> tuple[list[GateScore], str]:
    """Every cheap gate on one image, and its pHash. `source` only when the recipe keeps the composition."""
    work = working_copy(image)  # one reduced copy serves every statistic that needs no full resolution
    image_hash = phash(work)
    scores = (
        technical_scores(image, t, file_bytes, work=work)
        + artifact_scores(image, t, raw, work=work)
        + [check_duplicate(image_hash, published or [], t)]
        + brand_scores(work, palette, t, source)
    )
    return scores, image_hash


def rank_key(candidate: Candidate) -> tuple[float, float, float, float]:
    """Higher is better: aesthetic, then closeness to the palette, structure kept, sharpness (absent scores are neutral)."""
    by_gate = {s.gate: s.score for s in candidate.scores if s.score is not None}
    return (
        by_gate.get("aesthetic", 0.0),
        -by_gate.get("palette", 0.0),
        by_gate.get("structure", 0.0),
        by_gate.get("sharpness", 0.0),
    )


def in_band(score: GateScore, t: GateThresholds) -> bool:
    """Whether this score sits within the review band of its gate's threshold."""
    width = t.review_band.get(score.gate)
    if width is None or score.score is None or score.limit is None:
        return False
    return abs(score.score - score.limit) <= width


def is_borderline(candidate: Candidate, t: GateThresholds) -> bool:
    """Every failure is near its threshold, and at least one score is: a person should decide."""
    near = [s for s in candidate.scores if in_band(s, t)]
    failed = [s for s in candidate.scores if not s.passed]
    return bool(near) and all(in_band(s, t) for s in failed)


def failure_reasons(candidates: list[Candidate]) -> str:
    """'variant 0: sharpness 12.1 (>= 30.0): blurred …; variant 1: …' for the ledger and the quarantine."""
    parts = []
    for c in candidates:
        failed = [f"{s.gate} {s.score} ({s.threshold}): {s.detail}" for s in c.scores if not s.passed]
        if failed:
            parts.append(f"variant {c.index}: " + ", ".join(failed))
    return "; ".join(parts)


def decide(scored: list[Candidate], t: GateThresholds, phashes: dict[int, str] | None = None) -> GateDecision:
    """Best of N, review band, or quarantine — pure, from the scored variants."""
    phashes = phashes or {}
    clear = [c for c in scored if c.passed and not is_borderline(c, t)]
    if clear:
        return GateDecision(outcome="publish", candidates=scored, chosen=max(clear, key=rank_key), phashes=phashes)
    borderline = [c for c in scored if is_borderline(c, t)]
    if borderline:
        best = max(borderline, key=rank_key)
        near = ", ".join(f"{s.gate} {s.score} ({s.threshold})" for s in best.scores if in_band(s, t))
        return GateDecision(outcome="review", candidates=scored, chosen=best, phashes=phashes,
                            reason=f"variant {best.index} is borderline: {near}")
    if not scored:
        return GateDecision(outcome="quarantine", candidates=[], reason="no variants to score", phashes=phashes)
    return GateDecision(outcome="quarantine", candidates=scored, reason=failure_reasons(scored), phashes=phashes)


def apply_review(decision: GateDecision, review: GateReview | None, t: GateThresholds) -> GateDecision:
    """The decision after a person's answer; `review` None means nobody answered in time (the profile's default)."""
    if review is None:
        review = GateReview(decision=t.review_default, note=f"no decision within {t.review_timeout_s} s; profile default")
    note = f": {review.note}" if review.note else ""
    if review.decision == "approve":
        return decision.model_copy(update={"outcome": "publish", "review": review, "reason": ""})
    if review.decision == "regenerate":
        return decision.model_copy(update={"outcome": "regenerate", "review": review,
                                           "reason": f"review: regenerate requested{note} ({decision.reason})"})
    return decision.model_copy(update={"outcome": "quarantine", "review": review,
                                       "reason": f"rejected in review{note} ({decision.reason})"})


# --------------------------------------------------------------------------- the task


@task(name="score-candidates", cache_policy=NO_CACHE)
def score_candidates(
    candidates: list[Candidate],
    profile: ClientProfile,
    recipe: Recipe | None = None,
    source_path: str | None = None,
    source_uri: str | None = None,
) -> GateDecision:
    """Score all variants against the profile's gates and decide (publish, review or quarantine).

    `source_path` is the loaded source (for recipes that keep its composition); `source_uri`
    names the asset, whose own earlier publications are not duplicates of it.
    """
    t = profile.gates
    published = profile.ledger.published_phashes(profile.client_id, exclude_source_uri=source_uri)
    with cpu_slot:  # the pixel work only (tasks/cpu.py); the ledger query above needs no core
        source = None
        if recipe is not None and recipe.keep_composition and source_path:
            with Image.open(source_path) as src:
                source = working_copy(src)
        images = []
        for c in candidates:
            with Image.open(c.path) as img:
                img.load()
            images.append(img)
        aesthetic = score_aesthetic(images, profile.aesthetic, t)
        scored, phashes = [], {}
        for i, (c, img) in enumerate(zip(candidates, images)):
            raw = None
            if c.raw_path and c.raw_path != c.path and Path(c.raw_path).is_file():
                with Image.open(c.raw_path) as raw:
                    raw.load()
            scores, phashes[c.index] = score_image(
                img, t, file_bytes=Path(c.path).stat().st_size, raw=raw, palette=profile.palette, source=source, published=published,
            )
            if aesthetic is not None:
                scores.append(aesthetic[i])
            scored.append(c.model_copy(update={"scores": scores}))
    return decide(scored, t, phashes).model_copy(update={"source_path": source_path, "preview_ttl_s": t.review_timeout_s})


def quarantine_candidates(decision: GateDecision, folder: str | Path) -> list[str]:
    """Copy every variant and a `gates.json` (scores, reason) into `folder`, where a person can look; return the copies."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for c in decision.candidates:
        src = Path(c.path)
        if src.is_file():
            dest = out / f"variant-{c.index}{src.suffix}"
            shutil.copy2(src, dest)
            copies.append(str(dest))
    report = {
        "outcome": decision.outcome, "reason": decision.reason,
        "review": decision.review.model_dump(include={"decision", "note"}) if decision.review else None,
        "variants": [{"index": c.index, "file": f"variant-{c.index}{Path(c.path).suffix}", "passed": c.passed,
                      "scores": [s.model_dump() for s in c.scores]} for c in decision.candidates],
    }
    (out / "gates.json").write_text(json.dumps(report, indent=2))
    return copies
