"""Authenticity finish: film grain, vignette, soft light and slight lens distortion.

Generated images are too clean; a little of what a real lens and film add makes
them read as photographs. Each effect is its own step with its own parameters,
and every random choice (only the grain has any) comes from the chain's seed
plus the step's own `seed`, so the same inputs give the same bytes.

All four work in Pillow's C code on full-size images and in numpy only on
small masks or one 8-bit noise plane, to stay fast and bounded in memory.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageFilter
from pydantic import BaseModel, ConfigDict, Field


class GrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: float = Field(6.0, ge=0, le=64, description="Standard deviation of the grain, in 8-bit levels.")
    size: float = Field(1.0, ge=1, le=8, description="Grain size in pixels at a 1024 px short side (scaled with larger images).")
    colour: bool = Field(False, description="Independent grain per channel (colour film) instead of monochrome.")
    seed: int = Field(0, ge=0, description="Added to the chain's seed, so two grain steps can differ.")


class VignetteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strength: float = Field(0.3, ge=0, le=1, description="How dark the corners get (1 = black).")
    radius: float = Field(0.75, gt=0, le=2, description="Where darkening starts, as a fraction of the half-diagonal.")
    softness: float = Field(0.5, gt=0, le=2, description="Width of the falloff, as a fraction of the half-diagonal.")


class SoftLightParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: float = Field(0.3, ge=0, le=1, description="Blend of the soft-light glow over the image.")
    radius: float = Field(0.02, gt=0, le=0.2, description="Glow blur radius as a fraction of the long side.")


class LensDistortionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: float = Field(0.03, ge=-0.2, le=0.2, description="Radial coefficient: > 0 barrel, < 0 pincushion.")
    grid: int = Field(24, ge=4, le=128, description="Mesh cells per side (more = smoother, slower).")


def _rng(seed: int, offset: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, offset & 0xFFFFFFFF, tag])


@lru_cache(maxsize=32)
def _gaussian_levels(amount: float) -> tuple[int, ...]:
    """256 byte values → 128 + amount · Φ⁻¹(quantile): uniform random bytes become Gaussian grain.

    Drawing bytes and mapping them through this table (Pillow's `point`) is several
    times faster than drawing floats, and the 256 levels are finer than film grain needs.
    """
    q = (np.arange(256) + 0.5) / 256
    return tuple(int(v) for v in np.clip(np.round(128 + amount * _probit(q)), 0, 255))


def _probit(q: np.ndarray) -> np.ndarray:
    # Acklam's rational approximation of the inverse normal CDF (|error| < 1.2e-9): no scipy needed.
    a = [-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00]
    b = [-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01, -1.328068155288572e01]
    c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00]
    d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00]
    q = np.asarray(q, dtype=np.float64)
    out = np.empty_like(q)
    lo, hi = q < 0.02425, q > 1 - 0.02425
    mid = ~(lo | hi)
    r = q[mid] - 0.5
    t = r * r
    out[mid] = (((((a[0] * t + a[1]) * t + a[2]) * t + a[3]) * t + a[4]) * t + a[5]) * r / (
        ((((b[0] * t + b[1]) * t + b[2]) * t + b[3]) * t + b[4]) * t + 1
    )
    for mask, sign, qq in ((lo, 1, q[lo]), (hi, -1, 1 - q[hi])):
        r = np.sqrt(-2 * np.log(qq))
        out[mask] = sign * (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / (
            (((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1
        )
    return out


def add_grain(image: Image.Image, p: GrainParams, seed: int) -> Image.Image:
    if p.amount == 0:
        return image
    image = image.convert("RGB")
    w, h = image.size
    # Grain is a property of the film, not of the pixel grid: `size` is in pixels of a 1024 px short side,
    # so a larger image gets proportionally larger grains (the same look at any resolution).
    grain_px = p.size * max(1.0, min(w, h) / 1024)
    gw, gh = max(1, round(w / grain_px)), max(1, round(h / grain_px))
    rng = _rng(seed, p.seed, 0x67726E)
    levels = _gaussian_levels(p.amount)

    def plane() -> Image.Image:
        img = Image.frombytes("L", (gw, gh), rng.bytes(gw * gh)).point(levels)
        return img if (gw, gh) == (w, h) else img.resize((w, h), Image.Resampling.BICUBIC)

    noise = Image.merge("RGB", (plane(), plane(), plane())) if p.colour else Image.merge("RGB", (plane(),) * 3)
    # image + noise - 128, clipped, in one C pass.
    return ImageChops.add(image, noise, scale=1.0, offset=-128)


def vignette_mask(size: tuple[int, int], p: VignetteParams) -> Image.Image:
    """An 'L' mask: 255 where the image keeps its brightness, darker toward the corners."""
    w, h = size
    scale = min(1.0, 256 / max(w, h))
    sw, sh = max(2, round(w * scale)), max(2, round(h * scale))
    y, x = np.mgrid[0:sh, 0:sw].astype(np.float32)
    # Distance from the centre in units of the half-diagonal, so the effect is the same at any aspect.
    dx = (x + 0.5) / sw * 2 - 1
    dy = (y + 0.5) / sh * 2 - 1
    r = np.sqrt((dx * w) ** 2 + (dy * h) ** 2) / np.hypot(w, h)
    t = np.clip((r - p.radius) / p.softness, 0, 1)
    t = t * t * (3 - 2 * t)  # smoothstep: no visible ring where darkening starts
    mask = 255 * (1 - p.strength * t)
    small = Image.fromarray(np.clip(mask + 0.5, 0, 255).astype(np.uint8), "L")
    return small if small.size == size else small.resize(size, Image.Resampling.BILINEAR)


def apply_vignette(image: Image.Image, p: VignetteParams) -> Image.Image:
    if p.strength == 0:
        return image
    image = image.convert("RGB")
    mask = vignette_mask(image.size, p)
    return ImageChops.multiply(image, Image.merge("RGB", (mask, mask, mask)))


def apply_soft_light(image: Image.Image, p: SoftLightParams) -> Image.Image:
    if p.amount == 0:
        return image
    image = image.convert("RGB")
    w, h = image.size
    # Blur a quarter-size copy: the glow is low-frequency, and a full-size blur of
    # a large radius would dominate the chain's time.
    factor = 4 if min(w, h) >= 64 else 1
    small = image.resize((max(1, w // factor), max(1, h // factor)), Image.Resampling.BILINEAR)
    glow = small.filter(ImageFilter.GaussianBlur(max(0.5, p.radius * max(w, h) / factor)))
    glow = glow.resize((w, h), Image.Resampling.BILINEAR)
    lit = ImageChops.soft_light(image, glow)
    return Image.blend(image, lit, p.amount)


def _distort(x: float, y: float, w: int, h: int, k: float, norm: float) -> tuple[float, float]:
    cx, cy = w / 2, h / 2
    half_diag = np.hypot(cx, cy)
    nx, ny = (x - cx) / half_diag, (y - cy) / half_diag
    f = (1 + k * (nx * nx + ny * ny)) / norm
    return cx + nx * f * half_diag, cy + ny * f * half_diag


def apply_lens_distortion(image: Image.Image, p: LensDistortionParams) -> Image.Image:
    """Radial distortion as a Pillow MESH transform; normalised so the corners stay corners (no black borders)."""
    if p.k == 0:
        return image
    image = image.convert("RGB")
    w, h = image.size
    # Every sample must fall inside the frame: barrel (k > 0) is scaled so the corners
    # map to the corners; pincushion (k < 0) already samples inward everywhere.
    norm = 1 + p.k if p.k > 0 else 1.0
    n = p.grid
    xs = np.linspace(0, w, n + 1)
    ys = np.linspace(0, h, n + 1)
    mesh = []
    for j in range(n):
        for i in range(n):
            box = (round(xs[i]), round(ys[j]), round(xs[i + 1]), round(ys[j + 1]))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            # Quad corners in the source, in Pillow's order: NW, SW, SE, NE.
            quad = []
            for qx, qy in ((xs[i], ys[j]), (xs[i], ys[j + 1]), (xs[i + 1], ys[j + 1]), (xs[i + 1], ys[j])):
                quad.extend(_distort(qx, qy, w, h, p.k, norm))
            mesh.append((box, tuple(quad)))
    return image.transform((w, h), Image.Transform.MESH, mesh, resample=Image.Resampling.BILINEAR)
