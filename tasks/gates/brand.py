"""Brand-fidelity gates: palette distance to the brand, structure kept from the source.

- `palette`: how far the image's colours sit from the brand palette — the
  mean CIELAB delta-E (CIE76) from each pixel of a 128 px copy to its nearest
  brand colour (`tasks.postprocess.grade.palette_distance`, the one measure
  shared with the grade step). About 10-20 is on brand, 40+ another colour
  world. Always recorded; it fails only when the profile sets
  `max_palette_distance`.
- `structure`: SSIM between grey 256x256 copies of the output and its source,
  for recipes with `keep_composition` (a low strength that came back
  unrecognisable is a failed generation).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from brandforge.models import GateScore, GateThresholds
from brandforge.tasks.postprocess.grade import palette_distance

SSIM_SIDE = 256
SSIM_WINDOW = 7


def check_palette(image: Image.Image, palette: list[str] | tuple[str, ...], t: GateThresholds) -> GateScore:
    if not palette:
        return GateScore(gate="palette", score=None, threshold="no brand palette", passed=True, detail="skipped: the profile has no palette")
    distance = palette_distance(image, palette)
    limit = t.max_palette_distance
    passed = limit is None or distance <= limit
    return GateScore(
        gate="palette", score=round(distance, 2), threshold=f"<= {limit}" if limit is not None else "recorded only",
        limit=limit, passed=passed,
        detail="" if passed else f"off-palette: colours are on average delta-E {distance:.1f} from the brand palette (> {limit})",
    )


def _box(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over every k x k window ('valid' positions), by cumulative sums."""
    c = np.cumsum(np.cumsum(np.pad(a, ((1, 0), (1, 0))), axis=0), axis=1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def ssim(a: np.ndarray, b: np.ndarray, window: int = SSIM_WINDOW) -> float:
    """Mean SSIM (Wang et al. 2004) of two grey float arrays in 0..255, uniform window."""
    if a.shape != b.shape:
        raise ValueError(f"ssim needs arrays of one shape (got {a.shape} and {b.shape})")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = _box(a, window), _box(b, window)
    va = _box(a * a, window) - ma * ma
    vb = _box(b * b, window) - mb * mb
    cov = _box(a * b, window) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


def structural_similarity(image: Image.Image, source: Image.Image) -> float:
    """SSIM of grey SSIM_SIDE² copies (same framing whatever the sizes: outputs may be resized)."""
    size = (SSIM_SIDE, SSIM_SIDE)
    a = np.asarray(image.convert("L").resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
    b = np.asarray(source.convert("L").resize(size, Image.Resampling.BILINEAR), dtype=np.float64)
    return ssim(a, b)


def check_structure(image: Image.Image, source: Image.Image, t: GateThresholds) -> GateScore:
    score = structural_similarity(image, source)
    passed = score >= t.min_structure
    return GateScore(
        gate="structure", score=round(score, 3), threshold=f">= {t.min_structure}", limit=t.min_structure, passed=passed,
        detail="" if passed else f"composition lost: SSIM to the source {score:.2f} < {t.min_structure}",
    )


def brand_scores(
    image: Image.Image, palette: list[str] | tuple[str, ...], t: GateThresholds, source: Image.Image | None = None,
) -> list[GateScore]:
    """Palette distance always; structure only when a source is given (recipes with keep_composition)."""
    scores = [check_palette(image, palette, t)]
    if source is not None:
        scores.append(check_structure(image, source, t))
    return scores
