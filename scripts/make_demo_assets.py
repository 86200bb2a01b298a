"""Rebuild the demo catalog and logo under demo/ (run once; the outputs are committed).

Photos come from scikit-image's bundled sample data, all public domain or CC0
(astronaut: NASA; chelsea: Stefan van der Walt, CC0; coffee: Rachel Michetti,
CC0; rocket: SpaceX, public domain). The mug and the logo are drawn here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from skimage import data

DEMO = Path(__file__).resolve().parent.parent / "demo"


def mug(size: int = 768) -> Image.Image:
    """A studio-lit ceramic mug on a seamless backdrop: a product shot without a camera."""
    y = np.linspace(0, 1, size)[:, None]
    backdrop = (np.array([236, 232, 226]) * (1 - 0.25 * y) + np.array([200, 196, 190]) * 0.25 * y)
    img = Image.fromarray(np.broadcast_to(backdrop[:, None, :], (size, size, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    cx, top, w, h = size // 2 - 40, int(size * 0.28), int(size * 0.36), int(size * 0.44)
    d.ellipse([cx - w // 2 + 10, top + h - 30, cx + w // 2 + 40, top + h + 30], fill=(150, 146, 140))  # shadow
    img = img.filter(ImageFilter.GaussianBlur(8))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([cx + w // 2 - 20, top + h // 5, cx + w // 2 + 90, top + h * 3 // 4], radius=50, outline=(30, 80, 120), width=26)
    d.rectangle([cx - w // 2, top, cx + w // 2, top + h], fill=(34, 92, 138))
    for i in range(w):  # cylinder shading
        shade = 0.55 + 0.6 * np.sin(np.pi * i / w) ** 0.7
        d.line([cx - w // 2 + i, top, cx - w // 2 + i, top + h], fill=tuple(int(min(255, c * shade)) for c in (34, 92, 138)))
    d.ellipse([cx - w // 2, top - 22, cx + w // 2, top + 22], fill=(24, 64, 98), outline=(60, 120, 170), width=4)
    d.rectangle([cx - w // 2, top + h // 2 - 12, cx + w // 2, top + h // 2 + 12], fill=(232, 168, 56))
    return img


def logo() -> Image.Image:
    """A wordmark on a rounded plate, with alpha, in the demo palette."""
    img = Image.new("RGBA", (480, 140), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([0, 0, 479, 139], radius=36, fill=(20, 33, 61, 230))
    d.ellipse([22, 28, 106, 112], fill=(232, 168, 56, 255))
    d.polygon([(64, 40), (94, 92), (34, 92)], fill=(20, 33, 61, 255))
    from PIL import ImageFont

    try:
        font = ImageFont.load_default(size=64)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    d.text((126, 32), "forge", fill=(252, 246, 236, 255), font=font)
    return img


def main() -> None:
    catalog = DEMO / "catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()).save(catalog / "astronaut-portrait.png")
    Image.fromarray(data.chelsea()).save(catalog / "chelsea-cat.png")
    Image.fromarray(data.coffee()).save(catalog / "coffee-cup.jpg", quality=92)
    Image.fromarray(data.rocket()).save(catalog / "rocket-launch.jpg", quality=92)
    mug().save(catalog / "ceramic-mug.webp", quality=92)
    logo().save(DEMO / "logo.png")


if __name__ == "__main__":
    main()
