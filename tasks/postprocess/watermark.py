"""Watermark step: the client's logo at an anchor, scaled to the image, at an opacity."""

from __future__ import annotations

from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

Anchor = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center", "custom"]


class WatermarkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Anchor = "bottom-right"
    x: float | None = Field(None, ge=0, le=1, description="Custom anchor: left edge as a fraction of the width.")
    y: float | None = Field(None, ge=0, le=1, description="Custom anchor: top edge as a fraction of the height.")
    scale: float = Field(0.18, gt=0, le=1, description="Logo width as a fraction of the image width.")
    opacity: float = Field(0.85, ge=0, le=1)
    margin: float = Field(0.03, ge=0, le=0.25, description="Gap to the edges as a fraction of the shorter side.")

    @model_validator(mode="after")
    def _custom_needs_xy(self) -> "WatermarkParams":
        if self.anchor == "custom" and (self.x is None or self.y is None):
            raise ValueError("anchor 'custom' needs x and y (fractions between 0 and 1)")
        return self


def logo_box(image_size: tuple[int, int], logo_size: tuple[int, int], p: WatermarkParams) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the logo on the image."""
    w, h = image_size
    lw = max(1, round(w * p.scale))
    lh = max(1, round(logo_size[1] * lw / logo_size[0]))
    m = round(min(w, h) * p.margin)
    positions = {
        "top-left": (m, m),
        "top-right": (w - lw - m, m),
        "bottom-left": (m, h - lh - m),
        "bottom-right": (w - lw - m, h - lh - m),
        "center": ((w - lw) // 2, (h - lh) // 2),
    }
    if p.anchor == "custom":
        left, top = round((w - lw) * p.x), round((h - lh) * p.y)
    else:
        left, top = positions[p.anchor]
    return max(0, left), max(0, top), lw, lh


def apply_watermark(image: Image.Image, logo: Image.Image, p: WatermarkParams) -> Image.Image:
    left, top, lw, lh = logo_box(image.size, logo.size, p)
    mark = logo.convert("RGBA").resize((lw, lh), Image.Resampling.LANCZOS)
    if p.opacity < 1:
        alpha = mark.getchannel("A").point(lambda a: round(a * p.opacity))
        mark.putalpha(alpha)
    out = image.convert("RGBA")
    out.alpha_composite(mark, (left, top))
    return out.convert("RGB")
