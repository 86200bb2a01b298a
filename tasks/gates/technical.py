"""Technical gates: resolution and aspect, file size, blank, sharpness, exposure, colour cast.

Cheap, no-reference checks (numpy and Pillow only, a few ms per image) that
catch the obvious failures: an image too small or in the wrong shape for its
channel, a file too large or suspiciously tiny, a blank or near-uniform one, a
blurred one (variance of the Laplacian on a normalised 512 px grey copy), a
blown-out or crushed one, and one whose whole gamut leans to a single hue.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from brandforge.models import GateScore, GateThresholds

NORMALISED_SIDE = 512
# A cast is only a cast when the mean chroma is visibly off grey; below this
# offset (in Cb/Cr units, 0-255 scale) a low chroma spread is just a neutral image.
MIN_CAST_OFFSET = 8.0


def working_copy(image: Image.Image, side: int = NORMALISED_SIDE) -> Image.Image:
    """An RGB copy with its long side at most `side` px, made once per image for every statistic.

    A box `reduce` by the integer factor first (a fraction of a bilinear resize's cost
    on 1024² and larger), then a bilinear resize for the rest.
    """
    img = image.convert("RGB")
    factor = max(img.size) // side
    if factor >= 2:
        img = img.reduce(factor)
    if max(img.size) > side:
        scale = side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    return img


def grey_array(image: Image.Image, side: int = NORMALISED_SIDE) -> np.ndarray:
    """Grey copy with its long side at `side` px, as float32 0..255 (sharpness needs a fixed scale)."""
    grey = image.convert("L")
    scale = side / max(grey.size)
    if scale < 1:
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float32)


def small_copy(image: Image.Image, side: int = 256, mode: str = "RGB") -> Image.Image:
    """A `mode` copy whose long side is at most `side` px (statistics do not need full resolution)."""
    img = image.convert(mode)
    scale = side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    return img


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


def check_file_size(size_bytes: int, t: GateThresholds) -> GateScore:
    problems = []
    if size_bytes < t.min_file_bytes:
        problems.append(f"file is {size_bytes} bytes, below {t.min_file_bytes} (blank or truncated)")
    if size_bytes > t.max_file_bytes:
        problems.append(f"file is {size_bytes} bytes, above {t.max_file_bytes}")
    return GateScore(
        gate="file_size", score=float(size_bytes), passed=not problems,
        threshold=f"{t.min_file_bytes}-{t.max_file_bytes} bytes", detail="; ".join(problems) or f"{size_bytes} bytes",
    )


def check_contrast(grey: np.ndarray, t: GateThresholds) -> GateScore:
    """Blank / near-uniform: the spread of grey levels."""
    std = float(grey.std())
    passed = std >= t.min_contrast
    return GateScore(
        gate="contrast", score=round(std, 2), threshold=f">= {t.min_contrast}", limit=t.min_contrast, passed=passed,
        detail="" if passed else f"blank or near-uniform: grey std {std:.1f} < {t.min_contrast}",
    )


def check_sharpness(grey: np.ndarray, t: GateThresholds) -> GateScore:
    score = laplacian_variance(grey)
    return GateScore(
        gate="sharpness", score=round(score, 2), threshold=f">= {t.min_sharpness}", limit=t.min_sharpness,
        passed=score >= t.min_sharpness,
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


def colour_cast_factor(image: Image.Image) -> tuple[float, float]:
    """(cast factor, mean chroma offset): offset of the mean (Cb, Cr) from grey over the chroma spread.

    The equivalent-circle test: an image whose chroma cloud sits far from neutral
    relative to its own spread is tinted as a whole, not merely colourful.
    """
    ycc = np.asarray(small_copy(image, 256, "YCbCr"), dtype=np.float32)
    cb, cr = ycc[..., 1] - 128.0, ycc[..., 2] - 128.0
    offset = float(np.hypot(cb.mean(), cr.mean()))
    spread = float(np.sqrt(cb.var() + cr.var()))
    return offset / max(spread, 1.0), offset


def check_colour_cast(image: Image.Image, t: GateThresholds) -> GateScore:
    factor, offset = colour_cast_factor(image)
    cast = factor > t.max_colour_cast and offset >= MIN_CAST_OFFSET
    return GateScore(
        gate="colour_cast", score=round(factor, 3), threshold=f"<= {t.max_colour_cast}", limit=t.max_colour_cast,
        passed=not cast,
        detail=f"colour cast: chroma offset {offset:.1f} is {factor:.1f}x the chroma spread" if cast else f"chroma offset {offset:.1f}",
    )


def technical_scores(
    image: Image.Image, t: GateThresholds, file_bytes: int | None = None, work: Image.Image | None = None,
) -> list[GateScore]:
    """Every technical gate on one image; `file_bytes` is the encoded size (None skips that gate).

    `work` is the image's `working_copy` when the caller already has one.
    """
    work = work if work is not None else working_copy(image)
    grey = grey_array(work)
    scores = [check_resolution(image, t)]
    if file_bytes is not None:
        scores.append(check_file_size(file_bytes, t))
    scores += [check_contrast(grey, t), check_sharpness(grey, t), check_exposure(grey, t), check_colour_cast(work, t)]
    return scores
