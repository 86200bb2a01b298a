"""Grade step: pull an image's colours toward the brand palette, and measure how far it is.

`palette_distance(image, palette)` is the one measure of "how on-brand are the
colours" (the gates reuse it): the mean CIELAB distance (ΔE*76) from each pixel
of a small copy to its nearest palette colour.

The grade itself works in CIELAB: every colour keeps its lightness L* and moves
its a*/b* (hue and saturation together) a `strength` of the way toward a soft
mix of the nearby palette colours. The mapping is computed once on a 33³ grid
and applied as a Pillow 3D LUT, so a 4096² image costs one C pass and no
float copies of the whole image.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter
from pydantic import BaseModel, ConfigDict, Field

from brandforge.models import InvalidInput

# D65 white and the sRGB matrices (IEC 61966-2-1).
_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float64)
_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
LUT_SIZE = 33
DISTANCE_SIDE = 128


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in 0..1 → CIELAB (L 0..100)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB → (..., 3) sRGB in 0..1, clipped to the gamut."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    lin = np.clip(xyz @ _XYZ_TO_RGB.T, 0, 1)
    rgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(rgb, 0, 1)


def parse_palette(palette: list[str] | tuple[str, ...]) -> np.ndarray:
    """#rrggbb strings → (k, 3) CIELAB; an empty or malformed palette is an InvalidInput naming it."""
    if not palette:
        raise InvalidInput("palette must hold at least one #rrggbb colour (set the client profile's palette)")
    rgb = []
    for colour in palette:
        c = colour.strip().lstrip("#")
        if len(c) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in c):
            raise InvalidInput(f"palette colours must be #rrggbb hex (got {colour!r})")
        rgb.append([int(c[i : i + 2], 16) / 255 for i in (0, 2, 4)])
    return srgb_to_lab(np.array(rgb))


def palette_distance(image: Image.Image, palette: list[str] | tuple[str, ...], side: int = DISTANCE_SIDE) -> float:
    """Mean ΔE*76 from each pixel (of a copy ≤ `side` px) to its nearest palette colour; lower is more on-brand."""
    pal = parse_palette(palette)
    small = image if image.mode == "RGB" else image.convert("RGB")
    if max(small.size) > side:
        scale = side / max(small.size)
        size = (max(1, round(small.width * scale)), max(1, round(small.height * scale)))
        small = small.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    lab = srgb_to_lab(np.asarray(small, dtype=np.float64).reshape(-1, 3) / 255)
    d = np.linalg.norm(lab[:, None, :] - pal[None, :, :], axis=-1)
    return float(d.min(axis=1).mean())


class GradeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strength: float = Field(0.5, ge=0, le=1, description="How far a*/b* move toward the palette (0 = unchanged).")
    spread: float = Field(30.0, gt=0, le=200, description="ΔE over which a colour is drawn by a palette colour; larger blends more colours.")
    lightness: float = Field(0.0, ge=0, le=1, description="How far L* moves toward the palette (0 keeps the tones).")
    protect_neutrals: float = Field(0.0, ge=0, le=1, description="Keep greys and whites from being tinted (1 = fully).")


def grade_lut(palette: list[str] | tuple[str, ...], p: GradeParams, size: int = LUT_SIZE) -> ImageFilter.Color3DLUT:
    """The palette grade as a 3D LUT (deterministic: a function of the palette and the parameters only)."""
    pal = parse_palette(palette)
    axis = np.linspace(0.0, 1.0, size)
    # Pillow's table order: R changes fastest, then G, then B.
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).reshape(-1, 3)
    lab = srgb_to_lab(rgb)
    d2 = ((lab[:, None, :] - pal[None, :, :]) ** 2).sum(axis=-1)
    # Soft nearest colour: a smooth field avoids bands where two palette colours meet.
    logits = -d2 / (2 * p.spread**2)
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    w /= w.sum(axis=1, keepdims=True)
    target = w @ pal
    amount = np.full(len(lab), p.strength)
    if p.protect_neutrals:
        chroma = np.hypot(lab[:, 1], lab[:, 2])
        amount = amount * (1 - p.protect_neutrals * np.exp(-((chroma / 18.0) ** 2)))
    out = lab.copy()
    out[:, 1:] += amount[:, None] * (target[:, 1:] - lab[:, 1:])
    out[:, 0] += p.lightness * (target[:, 0] - lab[:, 0])
    table = lab_to_srgb(out).astype(np.float32)
    return ImageFilter.Color3DLUT(size, table.reshape(-1), channels=3)


@lru_cache(maxsize=32)
def _cached_lut(palette: tuple[str, ...], strength: float, spread: float, lightness: float, protect: float) -> ImageFilter.Color3DLUT:
    p = GradeParams(strength=strength, spread=spread, lightness=lightness, protect_neutrals=protect)
    return grade_lut(palette, p)


def grade_image(image: Image.Image, palette: list[str] | tuple[str, ...], p: GradeParams) -> Image.Image:
    if p.strength == 0 and p.lightness == 0:
        return image
    lut = _cached_lut(tuple(palette), p.strength, p.spread, p.lightness, p.protect_neutrals)
    return image.convert("RGB").filter(lut)
