"""Brand fidelity: palette distance to the brand palette, structure kept from the source."""

from __future__ import annotations

import numpy as np

from brandforge.models import GateThresholds
from brandforge.tasks.gates.brand import brand_scores, check_palette, check_structure, ssim, structural_similarity
from tests.gates.images import PALETTE, blurred, demo_photo, on_palette_poster, tinted

T = GateThresholds(max_palette_distance=20.0)


def test_on_palette_poster_passes():
    score = check_palette(on_palette_poster(), PALETTE, T)
    assert score.passed and score.score < 10


def test_off_palette_image_fails():
    green = tinted(demo_photo(), colour=(0, 220, 60), amount=0.7)
    score = check_palette(green, PALETTE, T)
    assert not score.passed and score.score > 20 and "off-palette" in score.detail


def test_palette_score_is_recorded_but_does_not_fail_without_a_limit():
    green = tinted(demo_photo(), colour=(0, 220, 60), amount=0.7)
    score = check_palette(green, PALETTE, GateThresholds())
    assert score.passed and score.score > 20 and score.threshold == "recorded only"


def test_no_palette_skips_the_gate(good):
    score = check_palette(good, [], T)
    assert score.passed and score.score is None and "skipped" in score.detail


def test_ssim_of_identical_arrays_is_one_and_of_noise_is_near_zero():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (64, 64))
    assert abs(ssim(a, a) - 1.0) < 1e-9
    assert abs(ssim(a, rng.uniform(0, 255, (64, 64)))) < 0.1


def test_stylised_output_keeps_the_composition(good):
    # What a low-strength generation looks like: same picture, softened and recoloured.
    output = tinted(blurred(good, 1.5), colour=(232, 168, 56), amount=0.25)
    score = check_structure(output, good, T)
    assert score.passed and score.score > 0.5


def test_unrecognisable_output_fails_structure(good):
    score = check_structure(demo_photo("astronaut-portrait.png"), good, T)
    assert not score.passed and "composition lost" in score.detail


def test_structure_ignores_output_size(good):
    assert structural_similarity(good.resize((1024, 768)), good) > 0.9


def test_structure_is_only_checked_when_a_source_is_given(good):
    assert [s.gate for s in brand_scores(good, PALETTE, T)] == ["palette"]
    assert [s.gate for s in brand_scores(good, PALETTE, T, source=good)] == ["palette", "structure"]
