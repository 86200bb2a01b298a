"""Deterministic, ML-free image stylisations for the local engine.

Each style is a pure function `(image, rng, intensity, steps, palette) -> image`
built from Pillow filters and numpy, so the demo and the tests run anywhere and
the same inputs give byte-identical pixels. `intensity` comes from
`guidance_scale` (how strongly to follow the prompt's style), `steps` from the
request's step count (more steps, more refinement passes).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageChops, ImageEnhance, ImageFilter, ImageOps

Palette = list[tuple[int, int, int]]
Style = Callable[[Image.Image, np.random.Generator, float, int, Palette], Image.Image]


def _noise(rng: np.random.Generator, size: tuple[int, int], sigma: float) -> np.ndarray:
    w, h = size
    return rng.normal(0.0, sigma, (h, w)).astype(np.float32)


def _add_grain(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    grain = _noise(rng, img.size, sigma)[..., None]
    return Image.fromarray(np.clip(arr + grain, 0, 255).astype(np.uint8))


def _vignette(img: Image.Image, amount: float) -> Image.Image:
    w, h = img.size
    y, x = np.ogrid[-1 : 1 : complex(0, h), -1 : 1 : complex(0, w)]
    mask = 1.0 - amount * np.clip(x * x + y * y, 0, 2) / 2
    arr = np.asarray(img, dtype=np.float32) * mask[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def flat_illustration(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """Smooth regions, then posterise onto the brand palette (plus black/white for edges)."""
    smooth = img
    for _ in range(max(1, steps // 10)):
        smooth = smooth.filter(ImageFilter.MedianFilter(5))
    colours = list(palette) or [(32, 32, 32), (200, 60, 60), (60, 120, 200), (240, 230, 210)]
    # The seed nudges the palette's light/dark anchors so batch variants differ.
    shade = int(rng.integers(0, 40))
    colours = colours + [(16 + shade, 16 + shade, 24 + shade), (250 - shade, 248 - shade, 240 - shade)]
    pal_img = Image.new("P", (1, 1))
    flat = sum((list(c) for c in colours), [])
    pal_img.putpalette(flat + flat[:3] * (256 - len(colours)))
    dither = Image.Dither.NONE if intensity >= 5 else Image.Dither.FLOYDSTEINBERG
    poster = smooth.quantize(palette=pal_img, dither=dither).convert("RGB")
    edges = ImageOps.invert(img.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 48 else 0))
    return ImageChops.multiply(poster, Image.merge("RGB", (edges, edges, edges)))


def oil_painting(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """Mode filter passes give flat, brush-like patches; relief adds impasto texture."""
    size = 5 + 2 * int(rng.integers(0, 2))
    out = img
    for _ in range(max(1, steps // 8)):
        out = out.filter(ImageFilter.ModeFilter(size))
    out = ImageEnhance.Color(out).enhance(1.0 + intensity / 15)
    relief = out.convert("L").filter(ImageFilter.EMBOSS).convert("RGB")
    out = ImageChops.overlay(out, relief)
    return _add_grain(out, rng, 3.0)


def watercolour(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """Bled, lightened washes, darker pigment at edges and paper texture."""
    wash = img.filter(ImageFilter.MedianFilter(7)).filter(ImageFilter.GaussianBlur(1.5 + rng.random()))
    wash = ImageEnhance.Brightness(ImageEnhance.Color(wash).enhance(0.8)).enhance(1.12)
    edges = img.convert("L").filter(ImageFilter.FIND_EDGES).filter(ImageFilter.GaussianBlur(1))
    edges = ImageOps.invert(ImageOps.autocontrast(edges)).point(lambda v: int(255 - (255 - v) * min(1.0, intensity / 10)))
    out = ImageChops.multiply(wash, Image.merge("RGB", (edges, edges, edges)))
    paper = Image.fromarray(np.clip(235 + _noise(rng, img.size, 12), 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
    return ImageChops.multiply(out, Image.merge("RGB", (paper, paper, paper))).point(lambda v: min(255, int(v * 1.08)))


def pencil_sketch(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """Colour-dodge of the grey image over its blurred negative, on grained paper."""
    grey = np.asarray(img.convert("L"), dtype=np.float32)
    blur_radius = 4 + 6 * rng.random()
    inv_blur = np.asarray(ImageOps.invert(img.convert("L")).filter(ImageFilter.GaussianBlur(blur_radius)), dtype=np.float32)
    dodge = np.clip(grey * 255.0 / np.maximum(255.0 - inv_blur, 1.0), 0, 255)
    dodge = 255 - (255 - dodge) * (0.6 + intensity / 25)
    dodge = np.clip(dodge + _noise(rng, img.size, 6), 0, 255).astype(np.uint8)
    return Image.fromarray(dodge).convert("RGB")


def vintage_film(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """Warm split-tone, lifted blacks, grain and vignette."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    warm = np.array([1.08, 1.0, 0.82], dtype=np.float32) + rng.normal(0, 0.02, 3).astype(np.float32)
    arr = 0.08 + 0.86 * arr * warm
    out = Image.fromarray(np.clip(arr * 255, 0, 255).astype(np.uint8))
    out = ImageEnhance.Color(out).enhance(0.75)
    out = _add_grain(out, rng, 4.0 + intensity)
    return _vignette(out, 0.35)


def clean_enhance(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """No style asked for: a studio clean-up (autocontrast, a little colour and sharpness)."""
    out = ImageOps.autocontrast(img, cutoff=0.5)
    out = ImageEnhance.Color(out).enhance(1.0 + 0.1 * rng.random() + intensity / 50)
    return out.filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=3))


# Prompt words → style. Order matters: the first style whose words appear wins.
STYLE_WORDS: list[tuple[str, tuple[str, ...], Style]] = [
    ("flat illustration", ("flat", "illustration", "poster", "posterised", "posterized", "vector"), flat_illustration),
    ("watercolour", ("watercolour", "watercolor", "aquarelle"), watercolour),
    ("oil painting", ("oil", "impasto", "oils"), oil_painting),
    ("pencil sketch", ("pencil", "sketch", "charcoal", "drawing"), pencil_sketch),
    ("vintage film", ("vintage", "film", "retro", "analog", "analogue"), vintage_film),
]


def choose_style(prompt: str, negative_prompt: str = "") -> tuple[str, Style]:
    """The style named by the prompt's words, skipping any the negative prompt names."""
    words = set(prompt.lower().replace(",", " ").split())
    negative = set(negative_prompt.lower().replace(",", " ").split())
    for name, keys, fn in STYLE_WORDS:
        if words & set(keys) and not negative & set(keys):
            return name, fn
    return "clean", clean_enhance
