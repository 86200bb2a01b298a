"""Aesthetic gate: the LAION aesthetic score of every candidate, in one batch.

The profile's `AestheticModel` block does the torch work (loaded once per
worker process); this module turns its scores into `GateScore`s against
`GateThresholds.min_aesthetic`, and turns missing weights (or a missing
[aesthetic] extra) into a clear verdict: a failed gate or a skipped one, as
the block's `on_missing_weights` says.
"""

from __future__ import annotations

from PIL import Image

from brandforge.blocks.aesthetic import AestheticModel, AestheticUnavailable
from brandforge.models import GateScore, GateThresholds


def aesthetic_verdict(score: float, t: GateThresholds) -> GateScore:
    passed = score >= t.min_aesthetic
    return GateScore(
        gate="aesthetic", score=round(score, 3), threshold=f">= {t.min_aesthetic}", limit=t.min_aesthetic, passed=passed,
        detail="" if passed else f"aesthetic score {score:.2f} < {t.min_aesthetic}",
    )


def unavailable_verdict(reason: str, model: AestheticModel) -> GateScore:
    skip = model.on_missing_weights == "skip"
    return GateScore(
        gate="aesthetic", score=None, threshold=f"on_missing_weights={model.on_missing_weights}", passed=skip,
        detail=("skipped: " if skip else "cannot score: ") + reason,
    )


def score_aesthetic(images: list[Image.Image], model: AestheticModel | None, t: GateThresholds) -> list[GateScore] | None:
    """One aesthetic GateScore per image, or None when the profile has no aesthetic model (gate not configured)."""
    if model is None:
        return None
    try:
        scores = model.score(images)
    except AestheticUnavailable as exc:
        return [unavailable_verdict(str(exc), model) for _ in images]
    return [aesthetic_verdict(s, t) for s in scores]
