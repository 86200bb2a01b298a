"""Artifact gates: detectors of broken generator output.

Four cheap detectors (numpy and Pillow, a few ms each on a 1024² image):

- `noise`: extreme noise. A robust estimate of Gaussian noise sigma — the median
  absolute response of Immerkaer's noise kernel, which cancels smooth shading
  and most edges, so textured images are not mistaken for noisy ones.
- `colour_band`: a stripe of perfectly uniform, identical rows or columns, as a
  truncated or stalled decode leaves (a grey or black block at the bottom) or a
  generator's flat seam across the picture.
- `alpha_hole`: transparent pixels in an image that must be opaque (a masked or
  inpainted region that came back empty). Checked on the raw generation too,
  because encoding to JPEG flattens the hole into a silent black patch.
- `repetition`: duplicated regions. The peak normalised cross-correlation of
  the image's detail (Laplacian) with a shifted copy of itself, over every
  shift with at least a quarter of overlap: a picture tiled from copies of
  itself, or a half pasted over the other, correlates near 1 at that shift.
  Small pasted patches (under about a quarter of the image) are not caught.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from brandforge.models import GateScore, GateThresholds
from brandforge.tasks.gates.technical import grey_array, small_copy, working_copy

# Grey levels within which a row counts as uniform and two rows as identical
# (encoders and resampling leave ±1-2 levels in genuinely flat areas).
FLAT_TOLERANCE = 2.0
# Shifts closer than this (px on the 256 px copy) are the image's own smoothness, not a copy.
MIN_COPY_SHIFT = 8
MIN_OVERLAP = 0.25
REPETITION_SIDE = 192
# A 384² full-resolution crop gives ~150k noise samples: plenty for a median.
NOISE_CROP = 384


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: FFT sizes with large prime factors are several times slower."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


@lru_cache(maxsize=16)
def _ones_spectrum(h: int, w: int, size: tuple[int, int]) -> np.ndarray:
    return np.fft.rfft2(np.ones((h, w)), s=size)


def noise_sigma(grey: np.ndarray) -> float:
    """Robust noise sigma (grey levels) of a float grey image: median |Immerkaer response| / (0.6745 * 6)."""
    g = grey
    r = (g[:-2, :-2] - 2 * g[:-2, 1:-1] + g[:-2, 2:]
         - 2 * g[1:-1, :-2] + 4 * g[1:-1, 1:-1] - 2 * g[1:-1, 2:]
         + g[2:, :-2] - 2 * g[2:, 1:-1] + g[2:, 2:])
    # For Gaussian noise the response has std 6*sigma; the median of |N(0, s)| is 0.6745*s.
    return float(np.median(np.abs(r)) / (0.6745 * 6.0))


def centre_crop_grey(image: Image.Image, side: int = NOISE_CROP) -> np.ndarray:
    """Full-resolution grey centre crop: resampling would average the noise away."""
    w, h = image.size
    left, top = max(0, (w - side) // 2), max(0, (h - side) // 2)
    crop = image.crop((left, top, min(w, left + side), min(h, top + side))).convert("L")
    return np.asarray(crop, dtype=np.float32)


def check_noise(image: Image.Image, t: GateThresholds) -> GateScore:
    sigma = noise_sigma(centre_crop_grey(image))
    passed = sigma <= t.max_noise
    return GateScore(
        gate="noise", score=round(sigma, 2), threshold=f"<= {t.max_noise}", limit=t.max_noise, passed=passed,
        detail="" if passed else f"extreme noise: estimated sigma {sigma:.1f} > {t.max_noise}",
    )


def _longest_flat_run(rows: np.ndarray) -> int:
    """Longest run of consecutive rows that are each uniform and equal to their neighbour. rows: (n, m, c)."""
    uniform = (rows.max(axis=1) - rows.min(axis=1)).max(axis=-1) <= FLAT_TOLERANCE
    means = rows.mean(axis=1)
    same_as_previous = np.r_[False, np.abs(np.diff(means, axis=0)).max(axis=-1) <= FLAT_TOLERANCE]
    best = run = 0
    for flat, same in zip(uniform, same_as_previous):
        run = run + 1 if flat and same and run else (1 if flat else 0)
        best = max(best, run)
    return best


def band_fraction(image: Image.Image) -> tuple[float, str]:
    """(share of the height or width covered by the longest flat stripe, 'rows'|'columns')."""
    rgb = np.asarray(small_copy(image, 256, "RGB"), dtype=np.int16)
    rows = _longest_flat_run(rgb) / rgb.shape[0]
    cols = _longest_flat_run(rgb.transpose(1, 0, 2)) / rgb.shape[1]
    return (rows, "rows") if rows >= cols else (cols, "columns")


def check_colour_band(image: Image.Image, t: GateThresholds) -> GateScore:
    fraction, axis = band_fraction(image)
    passed = fraction <= t.max_band_fraction
    return GateScore(
        gate="colour_band", score=round(fraction, 4), threshold=f"<= {t.max_band_fraction:.0%}", limit=t.max_band_fraction,
        passed=passed, detail="" if passed else f"flat colour band: {fraction:.0%} of the image is identical uniform {axis}",
    )


def alpha_hole_fraction(image: Image.Image) -> float:
    """Share of pixels more than half transparent (0 for images without alpha)."""
    if image.mode not in ("RGBA", "LA", "PA") and not (image.mode == "P" and "transparency" in image.info):
        return 0.0
    alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    return float((alpha < 128).mean())


def check_alpha_hole(images: list[Image.Image], t: GateThresholds) -> GateScore:
    """Worst alpha hole over the final image and, when given, the raw generation it came from."""
    fraction = max(alpha_hole_fraction(im) for im in images)
    passed = fraction <= t.max_alpha_hole
    return GateScore(
        gate="alpha_hole", score=round(fraction, 4), threshold=f"<= {t.max_alpha_hole:.1%}", limit=t.max_alpha_hole,
        passed=passed, detail="" if passed else f"alpha hole: {fraction:.1%} of the pixels are transparent",
    )


def repetition_score(image: Image.Image) -> tuple[float, tuple[int, int]]:
    """(peak correlation of the image's detail with a shifted copy of itself, that shift in px of the small copy).

    Normalised cross-correlation of the Laplacian detail over the overlap of
    the image and its shifted copy, for every shift at once (FFTs): a tiled or
    duplicated half gives about 1.0, natural images stay well below 0.5.
    """
    g = grey_array(image, REPETITION_SIDE).astype(np.float64)
    d = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    d -= d.mean()
    if float((d * d).sum()) < 1e-6:
        return 0.0, (0, 0)
    h, w = d.shape
    size = (_fast_len(2 * h), _fast_len(2 * w))  # zero-padded: linear correlation, no wrap-around matches
    f_d = np.fft.rfft2(d, s=size)
    cross = np.fft.irfft2(f_d * np.conj(f_d), s=size)
    # Detail energy of the image under each overlap; the shifted copy's is the same map mirrored.
    energy = np.fft.irfft2(np.fft.rfft2(d * d, s=size) * np.conj(_ones_spectrum(h, w, size)), s=size)
    mirrored = np.roll(energy[::-1, ::-1], (1, 1), axis=(0, 1))
    ncc = cross / np.sqrt(np.maximum(energy, 1e-9) * np.maximum(mirrored, 1e-9))
    # Keep shifts -h+1..h-1 and -w+1..w-1, centred (index h, w is no shift).
    ncc = np.roll(ncc, (h, w), axis=(0, 1))[: 2 * h, : 2 * w]
    dy, dx = np.ogrid[-h:h, -w:w]
    overlap = (h - np.abs(dy)) * (w - np.abs(dx))
    # Small overlaps correlate by chance; tiny shifts are the image's own smoothness.
    ncc[(overlap < MIN_OVERLAP * h * w) | ((np.abs(dy) < MIN_COPY_SHIFT) & (np.abs(dx) < MIN_COPY_SHIFT))] = 0.0
    iy, ix = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    return float(ncc[iy, ix]), (int(ix - w), int(iy - h))


def check_repetition(image: Image.Image, t: GateThresholds) -> GateScore:
    peak, (dx, dy) = repetition_score(image)
    passed = peak <= t.max_repetition
    return GateScore(
        gate="repetition", score=round(peak, 3), threshold=f"<= {t.max_repetition}", limit=t.max_repetition, passed=passed,
        detail="" if passed else f"duplicated region: detail repeats at a shift of ({dx}, {dy}) px with correlation {peak:.2f}",
    )


def artifact_scores(
    image: Image.Image, t: GateThresholds, raw: Image.Image | None = None, work: Image.Image | None = None,
) -> list[GateScore]:
    """Every artifact gate on one image (and its raw generation, for the alpha check).

    `work` is the image's `working_copy` when the caller already has one; noise
    and alpha always read the full-resolution image.
    """
    work = work if work is not None else working_copy(image)
    return [
        check_noise(image, t),
        check_colour_band(work, t),
        check_alpha_hole([image] + ([raw] if raw is not None else []), t),
        check_repetition(work, t),
    ]
