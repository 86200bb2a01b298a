"""Watermark step: the mark lands where the anchor says, at the right size, legible on any background."""

from __future__ import annotations

import numpy as np
import pytest

from brandforge.tasks.postprocess.watermark import WatermarkParams, apply_watermark, logo_box
from tests.postprocess.images import flat, make_logo


def green_box(image) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, right, bottom) of the logo's green pixels."""
    a = np.asarray(image).astype(np.int16)
    mask = (a[..., 1] > 120) & (a[..., 0] < 100) & (a[..., 2] < 100)
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize(
    "anchor, where",
    [("top-left", (0, 0)), ("top-right", (1, 0)), ("bottom-left", (0, 1)), ("bottom-right", (1, 1)), ("center", (0.5, 0.5))],
)
def test_logo_is_where_the_anchor_says(anchor, where):
    image = flat((400, 300), (128, 128, 128))
    p = WatermarkParams(anchor=anchor, scale=0.25, opacity=1.0, margin=0.05)
    out = apply_watermark(image, make_logo(), p)
    left, top, right, bottom = green_box(out)
    # Logo is 100 px wide (0.25 × 400) → 50 px tall; its green body starts ~3 px in.
    assert right - left == pytest.approx(100 - 7, abs=3) and bottom - top == pytest.approx(50 - 7, abs=3)
    margin = 15  # 0.05 × the short side (300)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    expect_x = {0: margin + 50, 1: 400 - margin - 50, 0.5: 200}[where[0]]
    expect_y = {0: margin + 25, 1: 300 - margin - 25, 0.5: 150}[where[1]]
    assert cx == pytest.approx(expect_x, abs=2) and cy == pytest.approx(expect_y, abs=2)
    # Nothing green outside the logo box; the rest of the image is untouched.
    a = np.asarray(out).astype(int)
    outside = np.ones(a.shape[:2], bool)
    outside[top - 4 : bottom + 4, left - 4 : right + 4] = False
    assert (a[outside] == 128).all()


def test_custom_anchor_and_opacity():
    image = flat((400, 300), (0, 0, 0))
    p = WatermarkParams(anchor="custom", x=0.25, y=0.0, scale=0.25, opacity=0.5, margin=0)
    left, top, w, h = logo_box(image.size, (120, 60), p)
    assert (left, top, w, h) == (75, 0, 100, 50)  # 0.25 of the free width (300)
    out = np.asarray(apply_watermark(image, make_logo(), p))
    assert out[25, 125, 1] == pytest.approx(100, abs=3)  # 200 green at half opacity on black


def test_custom_anchor_needs_x_and_y():
    with pytest.raises(ValueError, match="custom.*needs x and y"):
        WatermarkParams(anchor="custom", x=0.5)


def test_text_watermark_needs_no_logo_and_scales_with_the_image():
    p = WatermarkParams(text="brandforge", text_colour="#ff0000", anchor="top-left", scale=0.4, opacity=1, margin=0.02)
    for size in ((400, 300), (1600, 1200)):
        out = np.asarray(apply_watermark(flat(size, (255, 255, 255)), None, p)).astype(int)
        red = (out[..., 0] > 200) & (out[..., 1] < 80)
        ys, xs = np.nonzero(red)
        assert xs.min() < size[0] * 0.05 and ys.min() < size[1] * 0.08  # top-left
        assert (xs.max() - xs.min()) == pytest.approx(0.4 * size[0], rel=0.1)  # 40 % of the width


def test_plate_keeps_a_white_mark_legible_on_white_and_black():
    p = WatermarkParams(text="LOGO", text_colour="#ffffff", anchor="center", scale=0.5, opacity=1, plate=True, plate_opacity=0.7)
    on_white = np.asarray(apply_watermark(flat((400, 200), (255, 255, 255)), None, p)).astype(int)
    # The auto plate is dark behind a light mark: the mark area is no longer all white.
    assert on_white[90:110, 100:300].min() < 100
    on_black = np.asarray(apply_watermark(flat((400, 200), (0, 0, 0)), None, p)).astype(int)
    assert on_black[80:120, 100:300].max() == 255  # white text still there
    no_plate = np.asarray(apply_watermark(flat((400, 200), (255, 255, 255)), None, p.model_copy(update={"plate": False})))
    assert no_plate.min() == 255  # without the plate it vanishes: the point of the plate


def test_bad_colour_names_the_field():
    with pytest.raises(ValueError, match="text_colour must be #rrggbb"):
        WatermarkParams(text="x", text_colour="red")
