"""Score every candidate with every gate and pick the one to publish.

Best of N: among candidates that pass every gate, the one with the highest
sharpness wins (later gates refine the ranking); when none passes, the asset
is quarantined with each failed gate and its score.
"""

from __future__ import annotations

from PIL import Image
from prefect import task

from models import Candidate, GateThresholds
from tasks.gates.technical import technical_scores


def rank_key(candidate: Candidate) -> float:
    by_gate = {s.gate: s.score for s in candidate.scores}
    return float(by_gate.get("sharpness") or 0.0)


def failure_reasons(candidates: list[Candidate]) -> str:
    """'variant 0: sharpness 12.1 (>= 30.0); variant 1: …' for the ledger and the quarantine."""
    parts = []
    for c in candidates:
        failed = [f"{s.gate} {s.score} ({s.threshold}): {s.detail}" for s in c.scores if not s.passed]
        parts.append(f"variant {c.index}: " + ", ".join(failed))
    return "; ".join(parts)


@task(name="score-candidates")
def score_candidates(candidates: list[Candidate], thresholds: GateThresholds) -> tuple[list[Candidate], Candidate | None]:
    """All candidates with their scores, and the best passing one (or None)."""
    scored = []
    for c in candidates:
        with Image.open(c.path) as img:
            img.load()
            scores = technical_scores(img, thresholds)
        scored.append(c.model_copy(update={"scores": scores}))
    passing = [c for c in scored if c.passed]
    best = max(passing, key=rank_key) if passing else None
    return scored, best
