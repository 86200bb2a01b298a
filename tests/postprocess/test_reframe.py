"""Reframe step: the subject survives a crop to another aspect ratio; extend keeps every original pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from brandforge.tasks.postprocess.reframe import (
    ReframeParams,
    blur_extend,
    crop_size,
    mirror_extend,
    parse_ratio,
    reframe_local,
    smart_crop_box,
)
from tests.postprocess.images import red_mask, subject_scene


@pytest.mark.parametrize("centre", [(0.82, 0.5), (0.18, 0.45), (0.5, 0.5)])
def test_subject_survives_16x9_to_9x16(centre):
    image, _ = subject_scene((640, 360), centre=centre)
    total = red_mask(image).sum()
    out = reframe_local(image, "9:16", "crop", "auto")
    w, h = out.size
    assert w / h == pytest.approx(9 / 16, abs=0.01)
    assert red_mask(out).sum() >= 0.98 * total  # the whole disc is in the crop
    # And a centre crop would have lost it (for the off-centre cases): the smart crop is not a centre crop.
    if centre[0] != 0.5:
        cw, ch = crop_size(image.size, (9, 16))
        centre_crop = image.crop(((640 - cw) // 2, 0, (640 - cw) // 2 + cw, ch))
        assert red_mask(centre_crop).sum() < 0.5 * total


def test_subject_survives_vertical_crop_and_is_centred_when_room():
    image, box = subject_scene((360, 640), centre=(0.5, 0.25), radius=0.1)
    left, top, right, bottom = smart_crop_box(image, (1, 1))
    assert (right - left, bottom - top) == (360, 360)
    assert top <= box[1] and bottom >= box[3]
    # Room to spare: the disc sits near the middle of the crop, not at its edge.
    disc_centre = (box[1] + box[3]) / 2
    assert abs(disc_centre - (top + bottom) / 2) < 40


def test_every_ratio_shape_and_determinism():
    image, _ = subject_scene((640, 360), centre=(0.7, 0.4))
    for ratio in ("1:1", "4:5", "9:16", "16:9", "21:9"):
        a = reframe_local(image, ratio, "crop", "auto")
        b = reframe_local(image, ratio, "crop", "auto")
        rw, rh = parse_ratio(ratio)
        assert a.width / a.height == pytest.approx(rw / rh, rel=0.01)
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("extend", [mirror_extend, blur_extend])
def test_extend_keeps_the_original_in_the_middle(extend):
    image, _ = subject_scene((320, 180), centre=(0.5, 0.5))
    out = extend(image, (9, 16))
    assert out.size == (320, round(320 * 16 / 9))
    top = (out.height - 180) // 2
    assert np.array_equal(np.asarray(out.crop((0, top, 320, top + 180))), np.asarray(image))
    # The new area carries the image's own colours (no black bars).
    assert np.asarray(out.crop((0, 0, 320, top))).mean() > 100


def test_params_errors_name_the_field():
    with pytest.raises(ValueError, match="ratios must be written 'W:H'"):
        ReframeParams(ratios=["9x16"])
    with pytest.raises(ValueError, match="at least one"):
        ReframeParams(ratios=[])
    with pytest.raises(ValueError, match="distinct"):
        ReframeParams(ratios=["1:1", "1 : 1"])
    with pytest.raises(ValueError, match="mode"):
        ReframeParams(ratios=["1:1"], mode="stretch")


def test_faces_attention_keeps_the_head_in_a_wide_crop():
    skimage_data = pytest.importorskip("skimage.data")
    image = Image.fromarray(skimage_data.astronaut())
    left, top, right, bottom = smart_crop_box(image, (16, 9), faces=True)
    # The face is at about y 72-163 in this 512² picture.
    assert top <= 60 and bottom >= 170
