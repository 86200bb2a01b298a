"""Watermark step: the client's logo, or a line of text, at an anchor on the image.

The mark is sized relative to the image (a fraction of its width), placed at a
corner, the centre or a custom x/y, kept `margin` away from the edges, and
blended at an opacity. An optional contrast plate — a rounded box behind the
mark, dark behind a light mark and light behind a dark one — keeps it legible
on any background.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Anchor = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center", "custom"]
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


class WatermarkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Anchor = "bottom-right"
    x: float | None = Field(None, ge=0, le=1, description="Custom anchor: left edge as a fraction of the free width.")
    y: float | None = Field(None, ge=0, le=1, description="Custom anchor: top edge as a fraction of the free height.")
    scale: float = Field(0.18, gt=0, le=1, description="Mark width (plate excluded) as a fraction of the image width.")
    opacity: float = Field(0.85, ge=0, le=1)
    margin: float = Field(0.03, ge=0, le=0.25, description="Gap to the edges as a fraction of the shorter side.")
    text: str | None = Field(None, description="Draw this text instead of the logo (no logo needed).")
    text_colour: str = Field("#ffffff", description="#rrggbb colour of a text mark.")
    font_path: str | None = Field(None, description="TrueType/OpenType font for a text mark; default: Pillow's built-in font.")
    plate: bool = Field(False, description="Draw a contrast plate behind the mark.")
    plate_colour: str = Field("auto", description="'auto' (contrast with the mark) or #rrggbb.")
    plate_opacity: float = Field(0.55, ge=0, le=1)
    plate_padding: float = Field(0.2, ge=0, le=1, description="Plate padding as a fraction of the mark height.")

    @field_validator("text_colour")
    @classmethod
    def _text_colour(cls, v: str) -> str:
        if not _HEX.match(v):
            raise ValueError(f"text_colour must be #rrggbb (got {v!r})")
        return v

    @field_validator("plate_colour")
    @classmethod
    def _plate_colour(cls, v: str) -> str:
        if v != "auto" and not _HEX.match(v):
            raise ValueError(f"plate_colour must be 'auto' or #rrggbb (got {v!r})")
        return v

    @field_validator("text")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("text must not be blank; leave it out to use the logo")
        return v

    @model_validator(mode="after")
    def _custom_needs_xy(self) -> "WatermarkParams":
        if self.anchor == "custom" and (self.x is None or self.y is None):
            raise ValueError("anchor 'custom' needs x and y (fractions between 0 and 1)")
        return self


def place(image_size: tuple[int, int], mark_size: tuple[int, int], p: WatermarkParams) -> tuple[int, int]:
    """(left, top) of a mark of `mark_size` on the image, per the anchor and margin."""
    w, h = image_size
    mw, mh = mark_size
    m = round(min(w, h) * p.margin)
    if p.anchor == "custom":
        left, top = round((w - mw) * p.x), round((h - mh) * p.y)  # type: ignore[operator]
    else:
        left = {"top-left": m, "bottom-left": m, "top-right": w - mw - m, "bottom-right": w - mw - m}.get(p.anchor, (w - mw) // 2)
        top = {"top-left": m, "top-right": m, "bottom-left": h - mh - m, "bottom-right": h - mh - m}.get(p.anchor, (h - mh) // 2)
    return max(0, min(left, w - mw)), max(0, min(top, h - mh))


def logo_box(image_size: tuple[int, int], logo_size: tuple[int, int], p: WatermarkParams) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a logo (without plate) on the image."""
    lw = max(1, round(image_size[0] * p.scale))
    lh = max(1, round(logo_size[1] * lw / logo_size[0]))
    left, top = place(image_size, (lw, lh), p)
    return left, top, lw, lh


@lru_cache(maxsize=16)
def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


def text_mark(text: str, width: int, colour: str, font_path: str | None) -> Image.Image:
    """The text rendered (RGBA, transparent background) at about `width` px wide."""
    probe = 100
    left, top, right, bottom = _font(font_path, probe).getbbox(text)
    size = max(4, round(probe * width / max(1, right - left)))
    font = _font(font_path, size)
    left, top, right, bottom = font.getbbox(text)
    mark = Image.new("RGBA", (max(1, right - left), max(1, bottom - top)), (0, 0, 0, 0))
    ImageDraw.Draw(mark).text((-left, -top), text, font=font, fill=(*_hex_rgb(colour), 255))
    return mark


def _auto_plate(mark: Image.Image) -> tuple[int, int, int]:
    """Black behind a light mark, white behind a dark one (alpha-weighted luminance)."""
    arr = np.asarray(mark, dtype=np.float32)
    alpha = arr[..., 3]
    if alpha.sum() == 0:
        return (0, 0, 0)
    luma = (arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32) * alpha).sum() / alpha.sum()
    return (0, 0, 0) if luma >= 128 else (255, 255, 255)


def build_mark(image_size: tuple[int, int], logo: Image.Image | None, p: WatermarkParams) -> Image.Image:
    """The finished RGBA mark at its final size: logo or text, opacity applied, plate behind it."""
    width = max(1, round(image_size[0] * p.scale))
    if p.text:
        mark = text_mark(p.text, width, p.text_colour, p.font_path)
    else:
        if logo is None:
            raise ValueError("a logo is needed when no text is given")
        lh = max(1, round(logo.height * width / logo.width))
        mark = logo.convert("RGBA").resize((width, lh), Image.Resampling.LANCZOS)
    if p.opacity < 1:
        mark.putalpha(mark.getchannel("A").point(lambda a: round(a * p.opacity)))
    if not p.plate:
        return mark
    pad = max(1, round(mark.height * p.plate_padding))
    colour = _auto_plate(mark) if p.plate_colour == "auto" else _hex_rgb(p.plate_colour)
    plated = Image.new("RGBA", (mark.width + 2 * pad, mark.height + 2 * pad), (0, 0, 0, 0))
    ImageDraw.Draw(plated).rounded_rectangle(
        (0, 0, plated.width - 1, plated.height - 1), radius=pad, fill=(*colour, round(255 * p.plate_opacity))
    )
    plated.alpha_composite(mark, (pad, pad))
    return plated


def apply_watermark(image: Image.Image, logo: Image.Image | None, p: WatermarkParams) -> Image.Image:
    mark = build_mark(image.size, logo, p)
    mark = mark.crop((0, 0, min(mark.width, image.width), min(mark.height, image.height)))
    left, top = place(image.size, mark.size, p)
    out = image.convert("RGB")
    # Composite only the mark's box: converting a 4096² image to RGBA and back would
    # cost two full copies for a logo that covers a few percent of it.
    box = (left, top, left + mark.width, top + mark.height)
    region = out.crop(box).convert("RGBA")
    region.alpha_composite(mark)
    out.paste(region.convert("RGB"), box[:2])
    return out
