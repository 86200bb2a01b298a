"""Technical gates: images that must pass and images that must fail, each for its reason."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from brandforge.models import GateThresholds
from brandforge.tasks.gates.technical import (
    check_colour_cast,
    check_contrast,
    check_exposure,
    check_file_size,
    check_resolution,
    check_sharpness,
    grey_array,
    technical_scores,
)
from tests.gates.images import blank, blurred, demo_photo, over_exposed, tinted

T = GateThresholds()


def png_size(im: Image.Image) -> int:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.tell()


def test_good_photo_passes_every_technical_gate(good):
    scores = technical_scores(good, T, png_size(good))
    assert [s.gate for s in scores] == ["resolution", "file_size", "contrast", "sharpness", "exposure", "colour_cast"]
    assert all(s.passed for s in scores), [s for s in scores if not s.passed]


@pytest.mark.parametrize("name", ["astronaut-portrait.png", "chelsea-cat.png", "rocket-launch.jpg"])
def test_other_real_photos_pass(name):
    im = demo_photo(name, (480, 480))
    assert all(s.passed for s in technical_scores(im, T)), [s for s in technical_scores(im, T) if not s.passed]


def test_blurred_fails_sharpness(good):
    score = check_sharpness(grey_array(blurred(good)), T)
    assert not score.passed and score.score < T.min_sharpness and "blurred" in score.detail
    assert score.limit == T.min_sharpness


def test_blank_fails_contrast_and_file_size():
    im = blank()
    contrast = check_contrast(grey_array(im), T)
    assert not contrast.passed and "blank" in contrast.detail
    size = check_file_size(png_size(im), T)
    assert not size.passed and "below" in size.detail


def test_near_uniform_with_faint_noise_still_fails_contrast():
    from tests.gates.images import noisy

    im = noisy(blank(), sigma=1.5)
    assert not check_contrast(grey_array(im), T).passed


def test_over_exposed_fails_exposure(good):
    score = check_exposure(grey_array(over_exposed(good)), T)
    assert not score.passed and "clipped" in score.detail


def test_under_exposed_fails_exposure(good):
    dark = over_exposed(good, gain=0.15)
    score = check_exposure(grey_array(dark), T)
    assert not score.passed and "too dark" in score.detail


def test_too_small_and_wrong_aspect_fail_resolution(good):
    small = good.resize((200, 150))
    assert not check_resolution(small, T).passed
    square_target = GateThresholds(target_aspect=1.0)
    score = check_resolution(good, square_target)
    assert not score.passed and "aspect" in score.detail
    assert check_resolution(good.resize((400, 400)), square_target).passed


def test_file_too_large_fails():
    score = check_file_size(5_000_000, GateThresholds(max_file_bytes=1_000_000))
    assert not score.passed and "above" in score.detail


def test_colour_cast_fails_a_tinted_photo_not_a_colourful_one(good):
    assert check_colour_cast(good, T).passed
    score = check_colour_cast(tinted(good), T)
    assert not score.passed and "colour cast" in score.detail and score.score > T.max_colour_cast


def test_grey_image_is_not_a_cast():
    assert check_colour_cast(blank(), T).passed
