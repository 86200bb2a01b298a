"""Artifact gates: noise, flat colour bands, alpha holes and duplicated regions."""

from __future__ import annotations

from brandforge.models import GateThresholds
from brandforge.tasks.gates.artifacts import (
    alpha_hole_fraction,
    artifact_scores,
    check_alpha_hole,
    check_colour_band,
    check_noise,
    check_repetition,
    noise_sigma,
    repetition_score,
)
from tests.gates.images import demo_photo, noisy, tiled, with_alpha_hole, with_band

T = GateThresholds()


def test_good_photo_passes_every_artifact_gate(good):
    scores = artifact_scores(good, T)
    assert [s.gate for s in scores] == ["noise", "colour_band", "alpha_hole", "repetition"]
    assert all(s.passed for s in scores), [s for s in scores if not s.passed]


def test_noise_estimate_tracks_added_noise(good):
    import numpy as np

    flat = np.full((256, 256), 120.0, dtype=np.float32)
    rng = np.random.default_rng(3)
    assert abs(noise_sigma(flat + rng.normal(0, 10, flat.shape)) - 10) < 1.0
    assert noise_sigma(flat) == 0.0


def test_extreme_noise_fails(good):
    score = check_noise(noisy(good, sigma=40), T)
    assert not score.passed and "noise" in score.detail
    assert check_noise(noisy(good, sigma=3), T).passed


def test_grey_band_from_a_truncated_decode_fails(good):
    score = check_colour_band(with_band(good, 0.3), T)
    assert not score.passed and score.score >= 0.29 and "rows" in score.detail


def test_vertical_band_fails(good):
    rotated = with_band(good.rotate(90, expand=True), 0.25).rotate(-90, expand=True)
    score = check_colour_band(rotated, T)
    assert not score.passed and "columns" in score.detail


def test_alpha_hole_fails_on_final_or_raw(good):
    holed = with_alpha_hole(good)
    assert alpha_hole_fraction(holed) > 0.05
    assert not check_alpha_hole([holed], T).passed
    # The final JPEG has no alpha, but the raw generation it came from had a hole.
    assert not check_alpha_hole([good, holed], T).passed
    assert check_alpha_hole([good, good.convert("RGBA")], T).passed


def test_duplicated_half_fails_repetition(good):
    score = check_repetition(tiled(good), T)
    assert not score.passed and score.score > 0.9 and "duplicated" in score.detail
    peak, (dx, dy) = repetition_score(tiled(good))
    assert abs(abs(dx) - 96) <= 2 and abs(dy) <= 2  # half of the 192 px analysis copy


def test_real_photos_do_not_look_repeated():
    for name in ("astronaut-portrait.png", "chelsea-cat.png", "rocket-launch.jpg"):
        assert check_repetition(demo_photo(name, (400, 400)), T).passed
