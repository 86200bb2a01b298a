"""Deterministic, ML-free image stylisations for the local engine.

Each style is a pure function `(image, rng, intensity, steps, palette) -> image`
built from OpenCV's classical filters (edge-preserving smoothing, stylisation,
pencil sketch, a Kuwahara filter), Pillow and numpy — no ML, no network — so
the demo and the tests run anywhere and the same inputs give byte-identical
pixels. Brush, line and grain sizes scale with the image (`_scale`). `intensity` comes from
`guidance_scale` (how strongly to follow the prompt's style), `steps` from the
request's step count (more steps, more refinement passes).
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageChops, ImageEnhance, ImageFilter, ImageOps

Palette = list[tuple[int, int, int]]
Style = Callable[[Image.Image, np.random.Generator, float, int, Palette], Image.Image]


def _noise(rng: np.random.Generator, size: tuple[int, int], sigma: float) -> np.ndarray:
    w, h = size
    return rng.normal(0.0, sigma, (h, w)).astype(np.float32)


def _scale(img: Image.Image) -> float:
    """Feature sizes (brush, grain, line width) in pixels of a 1024 px short side, scaled to this image."""
    return max(0.35, min(img.size) / 1024)


def _soft_noise(rng: np.random.Generator, size: tuple[int, int], sigma: float, grain_px: float) -> np.ndarray:
    """Gaussian noise whose grains are about `grain_px` pixels wide (noise drawn small, then enlarged)."""
    w, h = size
    gw, gh = max(1, round(w / max(grain_px, 1.0))), max(1, round(h / max(grain_px, 1.0)))
    small = rng.normal(0.0, sigma, (gh, gw)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) if (gw, gh) != (w, h) else small


def _add_grain(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    grain = _soft_noise(rng, img.size, sigma, 1.5 * _scale(img))[..., None]
    return Image.fromarray(np.clip(arr + grain, 0, 255).astype(np.uint8))


def _vignette(img: Image.Image, amount: float) -> Image.Image:
    w, h = img.size
    y, x = np.ogrid[-1 : 1 : complex(0, h), -1 : 1 : complex(0, w)]
    mask = 1.0 - amount * np.clip(x * x + y * y, 0, 2) / 2
    arr = np.asarray(img, dtype=np.float32) * mask[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _bgr(img: Image.Image) -> np.ndarray:
    return cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)


def _rgb(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(cv2.cvtColor(arr, cv2.COLOR_BGR2RGB))


def _odd(n: float) -> int:
    k = max(3, int(round(n)))
    return k if k % 2 else k + 1


def _ink_lines(img: Image.Image, width_px: float) -> np.ndarray:
    """Clean dark outlines (the cartoon technique: adaptive threshold of a median-smoothed grey image);
    uint8, 0 on a line, 255 elsewhere."""
    grey = cv2.medianBlur(cv2.cvtColor(_bgr(img), cv2.COLOR_BGR2GRAY), _odd(5 * width_px))
    lines = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, _odd(9 * width_px), 7)
    # Drop specks: a line survives only where its neighbourhood is mostly line too.
    lines = cv2.morphologyEx(lines, cv2.MORPH_CLOSE, np.ones((2, 2), np.uint8))
    return lines


def flat_illustration(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """A flat poster: regions smoothed flat (edge-preserving), posterised onto the brand palette (plus a
    light and a dark anchor), with clean ink outlines."""
    k = _scale(img)
    smooth = _bgr(img)
    for _ in range(max(2, steps // 8)):
        smooth = cv2.bilateralFilter(smooth, _odd(9 * k), 60, 9 * k)
    smooth = cv2.edgePreservingFilter(smooth, flags=cv2.RECURS_FILTER, sigma_s=60 * k, sigma_r=0.45)
    smooth = cv2.medianBlur(smooth, _odd(7 * k))
    colours = list(palette) or [(32, 32, 32), (200, 60, 60), (60, 120, 200), (240, 230, 210)]
    # The seed nudges the palette's light/dark anchors so batch variants differ.
    shade = int(rng.integers(0, 40))
    colours = colours + [(16 + shade, 16 + shade, 24 + shade), (250 - shade, 248 - shade, 240 - shade)]
    pal_img = Image.new("P", (1, 1))
    flat = sum((list(c) for c in colours), [])
    pal_img.putpalette(flat + flat[:3] * (256 - len(colours)))
    dither = Image.Dither.NONE if intensity >= 5 else Image.Dither.FLOYDSTEINBERG
    poster = _rgb(smooth).quantize(palette=pal_img, dither=dither)
    # Tiny islands of one colour read as noise on a poster: a mode filter merges them into their region.
    poster = poster.convert("RGB").filter(ImageFilter.ModeFilter(_odd(5 * k)))
    lines = Image.fromarray(_ink_lines(img, max(1.0, 1.6 * k)))
    return ImageChops.multiply(poster, Image.merge("RGB", (lines, lines, lines)))


def _kuwahara(bgr: np.ndarray, radius: int) -> np.ndarray:
    """Kuwahara filter: each pixel takes the mean colour of the least varied of its four quadrant
    windows — flat, brush-like patches with crisp borders between them (the classic painterly filter)."""
    img = bgr.astype(np.float32)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    size = radius + 1
    mean = cv2.blur(img, (size, size), borderType=cv2.BORDER_REFLECT)
    gmean = cv2.blur(grey, (size, size), borderType=cv2.BORDER_REFLECT)
    gvar = cv2.blur(grey * grey, (size, size), borderType=cv2.BORDER_REFLECT) - gmean * gmean
    h, w = grey.shape
    # The box filter's window is centred; shifting by radius/2 gives each quadrant's window.
    half = radius // 2 + (radius % 2)
    pad_mean = cv2.copyMakeBorder(mean, half, half, half, half, cv2.BORDER_REFLECT)
    pad_var = cv2.copyMakeBorder(gvar, half, half, half, half, cv2.BORDER_REFLECT)
    best_var = np.full((h, w), np.inf, dtype=np.float32)
    out = np.zeros_like(img)
    for dy in (0, 2 * half):
        for dx in (0, 2 * half):
            var = pad_var[dy:dy + h, dx:dx + w]
            better = var < best_var
            best_var = np.where(better, var, best_var)
            out[better] = pad_mean[dy:dy + h, dx:dx + w][better]
    return np.clip(out, 0, 255).astype(np.uint8)


def oil_painting(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """Kuwahara brush patches, richer colour, and impasto: light raking across the paint's relief."""
    k = _scale(img)
    radius = max(3, round((5 + int(rng.integers(0, 3))) * k))
    paint = _bgr(img)
    for _ in range(max(1, steps // 10)):
        paint = _kuwahara(paint, radius)
    # Round off the filter's square windows into strokes: a median, then edge-preserving smoothing.
    paint = cv2.medianBlur(paint, _odd(radius * 0.8))
    paint = cv2.edgePreservingFilter(paint, flags=cv2.RECURS_FILTER, sigma_s=8 * k, sigma_r=0.25)
    out = ImageEnhance.Color(_rgb(paint)).enhance(1.1 + intensity / 30)
    out = ImageEnhance.Contrast(out).enhance(1.05)
    # Impasto: the relief of the paint's luminance (brush borders), lit from the top left, laid on softly.
    lum = cv2.GaussianBlur(cv2.cvtColor(paint, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 0.8 * k)
    relief = cv2.filter2D(lum, -1, np.array([[-2, -1, 0], [-1, 0, 1], [0, 1, 2]], np.float32))
    canvas = _soft_noise(rng, img.size, 6.0, 2.0 * k) + _soft_noise(rng, img.size, 3.0, 1.0)
    arr = np.asarray(out, dtype=np.float32) + (0.25 * relief + canvas)[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def watercolour(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """Soft washes of transparent colour: detail simplified (edge-preserving stylisation), colours
    bleeding softly into each other, values lifted toward the white paper, a faint darker rim where
    a wash dries, and the paper's soft tooth."""
    k = _scale(img)
    wash = cv2.stylization(_bgr(img), sigma_s=50 + 20 * float(rng.random()), sigma_r=0.3)
    wash = cv2.edgePreservingFilter(wash, flags=cv2.RECURS_FILTER, sigma_s=30 * k, sigma_r=0.6)
    rgb = np.asarray(_rgb(wash), dtype=np.float32) / 255.0
    # Bleed: colour runs past the drawing a little (a blurred copy under the sharper wash).
    bleed = cv2.GaussianBlur(rgb, (0, 0), 4 * k)
    rgb = 0.55 * rgb + 0.45 * bleed
    # Transparent paint on white: values lift toward the paper and colour thins, the hue stays.
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = grey + (rgb - grey) * 0.9
    rgb = 1.0 - (1.0 - rgb) * 0.78
    # A wash dries with a faint darker rim: the wash's own colour, slightly denser, along soft edges.
    lum = cv2.GaussianBlur(cv2.cvtColor(wash, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 2 * k)
    rim = cv2.GaussianBlur(cv2.morphologyEx(lum, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)), (0, 0), 1.2 * k) / 255.0
    rgb = rgb * (1.0 - np.clip(rim * (2.0 + intensity / 5), 0, 0.18))[..., None]
    # Paper: a soft, low-contrast tooth (a few % of brightness), never specks.
    paper = 1.0 + (_soft_noise(rng, img.size, 0.02, 3.0 * k) + _soft_noise(rng, img.size, 0.01, 1.2 * k))
    rgb = rgb * paper[..., None]
    return Image.fromarray(np.clip(rgb * 255.0, 0, 255).astype(np.uint8))


def pencil_sketch(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """Graphite on paper: OpenCV's pencil sketch (domain-transform edges with shading), a slightly warm
    grey paper tooth, no colour."""
    k = _scale(img)
    grey, _ = cv2.pencilSketch(_bgr(img), sigma_s=40 + 20 * float(rng.random()), sigma_r=0.08, shade_factor=0.04)
    tone = grey.astype(np.float32)
    # Darker strokes with more intensity; paper stays white.
    tone = 255.0 - (255.0 - tone) * (0.9 + intensity / 30)
    tone = tone * (1.0 + _soft_noise(rng, img.size, 0.02, 1.5 * k))
    return Image.fromarray(np.clip(tone, 0, 255).astype(np.uint8)).convert("RGB")


def vintage_film(img: Image.Image, rng: np.random.Generator, intensity: float, steps: int, palette: Palette) -> Image.Image:
    """A 1970s print: warm cast, faded (lifted) blacks and softened highlights, muted colour, a little
    halation around highlights, fine grain sized to the image, and a gentle vignette."""
    k = _scale(img)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    # S-curve for contrast in the mids, then fade: blacks lift, whites roll off.
    arr = arr * arr * (3 - 2 * arr)
    warm = np.array([1.06, 1.0, 0.84], dtype=np.float32) + rng.normal(0, 0.015, 3).astype(np.float32)
    arr = 0.07 + 0.86 * np.clip(arr * warm, 0, 1)
    out = ImageEnhance.Color(Image.fromarray(np.clip(arr * 255, 0, 255).astype(np.uint8))).enhance(0.72)
    # Halation: highlights bleed a warm glow.
    base = np.asarray(out, dtype=np.float32)
    bright = np.clip(base - 180.0, 0, None)
    glow = cv2.GaussianBlur(bright, (0, 0), 6 * k) * np.array([0.5, 0.25, 0.1], np.float32)
    out = Image.fromarray(np.clip(base + glow, 0, 255).astype(np.uint8))
    out = _add_grain(out, rng, 2.0 + intensity / 4)
    return _vignette(out, 0.3)


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
