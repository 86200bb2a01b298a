"""Grade step: colours move toward the brand palette, and the palette distance says so."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from brandforge.models import InvalidInput
from brandforge.tasks.postprocess.grade import GradeParams, grade_image, palette_distance, srgb_to_lab, lab_to_srgb
from tests.postprocess.images import subject_scene

PALETTE = ("#14213d", "#e8a838", "#fcf6ec", "#2b6f9e", "#c8553d")


def photo() -> Image.Image:
    image, _ = subject_scene((256, 144), centre=(0.6, 0.5))
    # Add a green band: a colour far from every palette entry.
    image.paste((40, 180, 60), (0, 0, 256, 30))
    return image


def test_lab_round_trip():
    rgb = np.random.default_rng(1).random((500, 3))
    assert np.allclose(lab_to_srgb(srgb_to_lab(rgb)), rgb, atol=1e-6)
    assert srgb_to_lab(np.array([1.0, 1.0, 1.0])) == pytest.approx([100, 0, 0], abs=1e-3)


def test_distance_is_zero_for_a_palette_colour_and_grows_away_from_it():
    assert palette_distance(Image.new("RGB", (32, 32), (0xE8, 0xA8, 0x38)), PALETTE) == pytest.approx(0, abs=0.01)
    assert palette_distance(Image.new("RGB", (32, 32), (40, 180, 60)), PALETTE) > 40


def test_grade_lowers_the_palette_distance_monotonically():
    image = photo()
    distances = [palette_distance(grade_image(image, PALETTE, GradeParams(strength=s)), PALETTE) for s in (0, 0.3, 0.6, 1.0)]
    assert distances == sorted(distances, reverse=True)
    assert distances[-1] < 0.8 * distances[0]


def test_grade_keeps_lightness_and_is_deterministic():
    image = photo()
    p = GradeParams(strength=0.7)
    a, b = grade_image(image, PALETTE, p), grade_image(image, PALETTE, p)
    assert a.tobytes() == b.tobytes()
    la = srgb_to_lab(np.asarray(a, dtype=float) / 255)[..., 0]
    lo = srgb_to_lab(np.asarray(image, dtype=float) / 255)[..., 0]
    assert np.abs(la - lo).mean() < 4  # hue and saturation move; tones stay


def test_protect_neutrals_keeps_white_white():
    white = Image.new("RGB", (16, 16), (250, 250, 250))
    tinted = np.asarray(grade_image(white, ("#c8553d",), GradeParams(strength=1, protect_neutrals=0)))
    kept = np.asarray(grade_image(white, ("#c8553d",), GradeParams(strength=1, protect_neutrals=1)))
    assert tinted[0, 0, 0] - tinted[0, 0, 2] > 20  # pulled toward the red
    # The LUT interpolates between grid colours that are slightly tinted, hence a small residue.
    assert abs(int(kept[0, 0, 0]) - int(kept[0, 0, 2])) < (int(tinted[0, 0, 0]) - int(tinted[0, 0, 2])) / 4


def test_bad_palette_and_params():
    with pytest.raises(InvalidInput, match="palette must hold"):
        palette_distance(photo(), ())
    with pytest.raises(InvalidInput, match="#rrggbb"):
        palette_distance(photo(), ("blue",))
    with pytest.raises(ValueError, match="strength"):
        GradeParams(strength=1.5)
