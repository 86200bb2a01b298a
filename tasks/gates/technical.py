"""Technical gates: resolution and aspect, sharpness and exposure.

Cheap, no-reference checks that catch the obvious failures: an image too small
or in the wrong shape for its channel, a blurred one (variance of the
Laplacian on a normalised 512 px grey copy), a blown-out or crushed one.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from models import GateScore, GateThresholds

NORMALISED_SIDE = 512


def grey_array(image: Image.Image, side: int = NORMALISED_SIDE) -> np.ndarray:
    """Grey copy with its long side at `side` px, as float32 0..255 (sharpness needs a fixed scale)."""
    grey = image.convert("L")
    scale = side / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float32)


def laplacian_variance(grey: np.ndarray) -> float:
    lap = -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    return float(lap.var())


def check_resolution(image: Image.Image, t: GateThresholds) -> GateScore:
    w, h = image.size
    problems = []
    if w < t.min_width or h < t.min_height:
        problems.append(f"{w}x{h} is below the minimum {t.min_width}x{t.min_height}")
    if t.target_aspect:
        deviation = abs(w / h - t.target_aspect) / t.target_aspect
        if deviation > t.aspect_tolerance:
            problems.append(f"aspect {w / h:.3f} is {deviation:.1%} off the target {t.target_aspect:.3f}")
    return GateScore(
        gate="resolution", score=float(min(w, h)), passed=not problems,
        threshold=f">= {t.min_width}x{t.min_height}" + (f", aspect {t.target_aspect:.3f}±{t.aspect_tolerance:.0%}" if t.target_aspect else ""),
        detail="; ".join(problems) or f"{w}x{h}",
    )


def check_sharpness(grey: np.ndarray, t: GateThresholds) -> GateScore:
    score = laplacian_variance(grey)
    return GateScore(
        gate="sharpness", score=round(score, 2), threshold=f">= {t.min_sharpness}", passed=score >= t.min_sharpness,
        detail="" if score >= t.min_sharpness else f"blurred: Laplacian variance {score:.1f} < {t.min_sharpness}",
    )


def check_exposure(grey: np.ndarray, t: GateThresholds) -> GateScore:
    mean = float(grey.mean())
    clipped = float(((grey <= 2) | (grey >= 253)).mean())
    problems = []
    if mean < t.min_brightness:
        problems.append(f"too dark: mean {mean:.0f} < {t.min_brightness:.0f}")
    if mean > t.max_brightness:
        problems.append(f"too bright: mean {mean:.0f} > {t.max_brightness:.0f}")
    if clipped > t.max_clipped_fraction:
        problems.append(f"{clipped:.0%} of pixels clipped (> {t.max_clipped_fraction:.0%})")
    return GateScore(
        gate="exposure", score=round(mean, 1), passed=not problems,
        threshold=f"mean {t.min_brightness:.0f}-{t.max_brightness:.0f}, clipped <= {t.max_clipped_fraction:.0%}",
        detail="; ".join(problems) or f"mean {mean:.0f}, clipped {clipped:.1%}",
    )


def technical_scores(image: Image.Image, t: GateThresholds) -> list[GateScore]:
    grey = grey_array(image)
    return [check_resolution(image, t), check_sharpness(grey, t), check_exposure(grey, t)]
