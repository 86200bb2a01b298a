"""Synthetic test images with known content, so tests can check pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SUBJECT = (220, 30, 40)  # the red of the subject disc


def textured_background(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A low-contrast, slightly noisy beige-grey backdrop (no strong structure of its own)."""
    w, h = size
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    base = np.stack([180 + 20 * y + 0 * np.ones((1, w)), 175 + 15 * y + 0 * np.ones((1, w)), 165 + 10 * y + 0 * np.ones((1, w))], axis=-1)
    base += rng.normal(0, 4, size=(h, w, 1))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def subject_scene(size: tuple[int, int] = (640, 360), centre: tuple[float, float] = (0.8, 0.5), radius: float = 0.16) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A 16:9-ish scene with a red disc (the subject) off-centre; returns the image and the disc's box."""
    img = textured_background(size)
    w, h = size
    r = round(radius * h)
    cx, cy = round(centre[0] * w), round(centre[1] * h)
    box = (cx - r, cy - r, cx + r, cy + r)
    ImageDraw.Draw(img).ellipse(box, fill=SUBJECT)
    return img, box


def red_mask(image: Image.Image) -> np.ndarray:
    """Where the subject's red is (tolerant of resampling at the disc's edge)."""
    a = np.asarray(image.convert("RGB")).astype(np.int16)
    return (a[..., 0] > 170) & (a[..., 1] < 90) & (a[..., 2] < 100)


def make_logo(size: tuple[int, int] = (120, 60), colour: tuple[int, int, int] = (0, 200, 0)) -> Image.Image:
    """An opaque green rectangle with a transparent margin: easy to find on the image."""
    logo = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(logo).rectangle((4, 4, size[0] - 5, size[1] - 5), fill=(*colour, 255))
    return logo


def flat(size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", size, colour)


def _s15(v: float) -> bytes:
    import struct

    return struct.pack(">i", round(v * 65536))


def p3_icc_profile(description: str = "Display P3 (test)") -> bytes:
    """A minimal ICC v2 matrix/TRC display profile with Display P3 primaries (D50-adapted) and gamma 2.2.

    Pillow can only create sRGB/LAB/XYZ profiles, and no ICC files are installed here, so the test builds one.
    """
    import struct

    def xyz(x, y, z):
        return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)

    curve = b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", round(2.2 * 256)) + b"\0\0"
    ascii_ = description.encode() + b"\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_)) + ascii_ + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)),
        (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)),
        (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp"
        + b"\0" * 24 + struct.pack(">I", 0) + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28
    )
    assert len(header) == 128, len(header)
    return header + struct.pack(">I", len(tags)) + table + data
