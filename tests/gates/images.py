"""Images the gate tests make: good ones from the demo photos, and broken copies of them.

Every helper returns a PIL image built in memory (no network, no weights):
`demo_photo()` passes every gate with the default thresholds; the others make
the blurred, blank, over-exposed, noisy, banded, holed, tiled, tinted and
on-palette versions.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from tests.conftest import DEMO_CATALOG

PALETTE = ["#14213d", "#e8a838", "#fcf6ec", "#2b6f9e", "#c8553d"]


def demo_photo(name: str = "coffee-cup.jpg", size: tuple[int, int] = (512, 384)) -> Image.Image:
    with Image.open(DEMO_CATALOG / name) as im:
        return im.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def blurred(im: Image.Image, radius: float = 6) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(radius))


def blank(size: tuple[int, int] = (512, 384), colour: tuple[int, int, int] = (180, 180, 180)) -> Image.Image:
    return Image.new("RGB", size, colour)


def over_exposed(im: Image.Image, gain: float = 3.5) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) * gain, 0, 255).astype(np.uint8))


def noisy(im: Image.Image, sigma: float = 40, seed: int = 0) -> Image.Image:
    a = np.asarray(im, dtype=np.float32)
    return Image.fromarray(np.clip(a + np.random.default_rng(seed).normal(0, sigma, a.shape), 0, 255).astype(np.uint8))


def tinted(im: Image.Image, colour: tuple[int, int, int] = (255, 110, 0), amount: float = 0.5) -> Image.Image:
    return Image.blend(im, Image.new("RGB", im.size, colour), amount)


def with_band(im: Image.Image, fraction: float = 0.3, colour: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    """The bottom `fraction` replaced by one flat colour, as a truncated decode leaves it."""
    out = im.copy()
    h = int(im.height * fraction)
    out.paste(colour, (0, im.height - h, im.width, im.height))
    return out


def with_alpha_hole(im: Image.Image, box: tuple[float, float, float, float] = (0.3, 0.3, 0.6, 0.6)) -> Image.Image:
    out = im.convert("RGBA")
    w, h = im.size
    out.paste((0, 0, 0, 0), (int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    return out


def tiled(im: Image.Image) -> Image.Image:
    """The left half pasted over the right half: a duplicated region."""
    out = im.copy()
    half = im.width // 2
    out.paste(im.crop((0, 0, half, im.height)), (half, 0))
    return out


def on_palette_poster(size: tuple[int, int] = (512, 384), seed: int = 1) -> Image.Image:
    """A flat poster made only of brand colours, with some texture so the technical gates pass."""
    rng = np.random.default_rng(seed)
    colours = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], dtype=np.float32)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    idx = ((xx // 64) + (yy // 48) * 3 + ((xx + yy) // 90)) % len(colours)
    a = colours[idx] + rng.normal(0, 3, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
