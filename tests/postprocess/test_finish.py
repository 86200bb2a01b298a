"""Authenticity finish: grain, vignette, soft light and lens distortion, each seeded and measurable."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from brandforge.tasks.postprocess.finish import (
    GrainParams,
    LensDistortionParams,
    SoftLightParams,
    VignetteParams,
    add_grain,
    apply_lens_distortion,
    apply_soft_light,
    apply_vignette,
)
from tests.postprocess.images import subject_scene

GREY = Image.new("RGB", (200, 120), (128, 128, 128))


def test_grain_is_seeded_and_has_the_asked_strength():
    a = add_grain(GREY, GrainParams(amount=8), seed=1)
    b = add_grain(GREY, GrainParams(amount=8), seed=1)
    c = add_grain(GREY, GrainParams(amount=8), seed=2)
    d = add_grain(GREY, GrainParams(amount=8, seed=5), seed=1)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes() and a.tobytes() != d.tobytes()
    arr = np.asarray(a).astype(float)
    assert arr.mean() == pytest.approx(128, abs=0.5)
    assert arr.std() == pytest.approx(8, rel=0.1)
    assert (arr[..., 0] == arr[..., 1]).all()  # monochrome by default
    coloured = np.asarray(add_grain(GREY, GrainParams(amount=8, colour=True), seed=1)).astype(float)
    assert not (coloured[..., 0] == coloured[..., 1]).all()


def test_coarse_grain_is_smoother():
    fine = np.asarray(add_grain(GREY, GrainParams(amount=8, size=1), seed=1)).astype(float)[..., 0]
    coarse = np.asarray(add_grain(GREY, GrainParams(amount=8, size=4), seed=1)).astype(float)[..., 0]
    assert np.abs(np.diff(coarse, axis=1)).mean() < 0.5 * np.abs(np.diff(fine, axis=1)).mean()


def test_vignette_darkens_corners_not_the_centre():
    white = Image.new("RGB", (300, 200), (255, 255, 255))
    out = np.asarray(apply_vignette(white, VignetteParams(strength=0.5, radius=0.5, softness=0.5))).astype(int)
    assert out[100, 150].min() >= 254
    assert out[0, 0].max() == pytest.approx(128, abs=6)  # 1 - 0.5 at the corner
    assert out[0, 0, 0] == out[0, 299, 0] == out[199, 0, 0] == out[199, 299, 0]  # symmetric


def test_soft_light_adds_contrast_and_keeps_size():
    image, _ = subject_scene((256, 144))
    out = apply_soft_light(image, SoftLightParams(amount=0.8, radius=0.05))
    assert out.size == image.size
    assert not np.array_equal(np.asarray(out), np.asarray(image))
    assert apply_soft_light(image, SoftLightParams(amount=0)).tobytes() == image.tobytes()


@pytest.mark.parametrize("k", [0.1, -0.1])
def test_lens_distortion_bends_lines_without_black_borders(k):
    # A white image with a black horizontal line near the top edge.
    img = Image.new("RGB", (300, 200), (255, 255, 255))
    img.paste((0, 0, 0), (0, 40, 300, 44))
    out = np.asarray(apply_lens_distortion(img, LensDistortionParams(k=k))).astype(int)
    assert out.shape == (200, 300, 3)
    # No black borders: the frame's corners and edges are still white.
    for y, x in ((0, 0), (0, 299), (199, 0), (199, 299), (100, 0), (199, 150)):
        assert out[y, x].min() > 200
    # The straight line is now curved: its row differs between the middle and the sides.
    rows = lambda col: np.flatnonzero(out[:, col, 0] < 128)  # noqa: E731
    mid, side = rows(150).mean(), rows(20).mean()
    assert (mid < side) if k > 0 else (mid > side)
    # The centre stays where it was.
    assert apply_lens_distortion(img, LensDistortionParams(k=k)).getpixel((150, 100)) == (255, 255, 255)
