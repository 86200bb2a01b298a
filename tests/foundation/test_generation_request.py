"""The image-to-image contract: defaults, bounds and messages that name the field."""

import pytest
from pydantic import ValidationError

from brandforge.models import GenerationParams, GenerationRequest, Recipe, describe_validation_error

BASE = {"source_image": "file:///tmp/x.png", "prompt": "watercolour mug", "negative_prompt": "blurry"}


def message(**overrides) -> str:
    with pytest.raises(ValidationError) as info:
        GenerationRequest(**{**BASE, **overrides})
    return describe_validation_error(info.value)


def test_defaults_match_the_contract():
    r = GenerationRequest(**BASE)
    assert (r.guidance_scale, r.image_guidance_scale, r.strength, r.steps, r.batch_size) == (7.5, 1.5, 0.8, 20, 1)
    assert (r.seed, r.width, r.height, r.prompt_2) == (None, 0, 0, None)


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("strength", 3.0, "strength must be between 0.01 and 1.0"),
        ("strength", 0.0, "strength must be between 0.01 and 1.0"),
        ("prompt", "", "prompt must not be empty"),
        ("prompt", "   ", "prompt must not be empty"),
        ("batch_size", 9, "batch_size must be at most 8"),
        ("batch_size", 0, "batch_size must be at least 1"),
        ("steps", 60, "steps must be at most 50"),
        ("steps", 0, "steps must be at least 1"),
        ("guidance_scale", 0, "guidance_scale must be greater than 0 and at most 15"),
        ("guidance_scale", 16, "guidance_scale must be greater than 0 and at most 15"),
        ("image_guidance_scale", -1, "image_guidance_scale must be greater than 0 and at most 15"),
        ("width", 10, "width must be 0 (keep the source's) or between 64 and 4096"),
        ("seed", -5, "seed must be between 0 and 4294967295"),
    ],
)
def test_bad_values_name_the_field_and_range(field, value, expected):
    assert expected in message(**{field: value})


def test_strength_message_explains_direction():
    assert "lower keeps more of the source" in message(strength=3.0)


def test_required_fields_are_named():
    with pytest.raises(ValidationError) as info:
        GenerationRequest(source_image="file:///x.png", prompt="x")
    assert "negative_prompt" in describe_validation_error(info.value)


def test_unknown_field_is_refused():
    assert "strenght" in message(strenght=0.5)


def test_wrong_type_names_the_field():
    assert "steps" in message(steps="many")


@pytest.mark.parametrize("field", ["strength", "guidance_scale", "image_guidance_scale"])
@pytest.mark.parametrize("model", [GenerationParams, Recipe, GenerationRequest])
def test_nan_is_refused_naming_the_field_and_range(field, model):
    fields = {"name": "r"} if model is Recipe else dict(BASE) if model is GenerationRequest else {}
    with pytest.raises(ValidationError) as info:
        model(**fields, **{field: float("nan")})
    assert f"{field} must be a number" in describe_validation_error(info.value)


def test_a_negative_recipe_seed_is_refused_where_the_recipe_is_made():
    with pytest.raises(ValidationError) as info:
        Recipe(name="r", seed=-1)
    assert "seed must be between 0 and 4294967295" in describe_validation_error(info.value)


def test_unset_is_none_in_a_recipe_and_not_explicit_in_its_request():
    recipe = Recipe(name="r", steps=30)
    assert recipe.strength is None and recipe.set_params() == {"steps": 30}
    request = recipe.generation_request(source_image="file:///x.png", prompt="mug", seed=99)
    assert request.strength == 0.8 and request.steps == 30 and request.seed == 99
    assert request.explicit == ("steps",)  # the derived seed and the defaults are not the recipe's wishes
    assert recipe.model_copy(update={"seed": 5}).generation_request(
        source_image="file:///x.png", prompt="mug", seed=5).explicit == ("steps", "seed")


def test_a_recipe_changed_without_validation_is_validated_again():
    broken = Recipe(name="r").model_copy(update={"strength": 3.0})
    with pytest.raises(ValidationError, match="strength must be between 0.01 and 1.0"):
        broken.generation_request(source_image="file:///x.png", prompt="mug")


def test_a_request_given_values_counts_them_as_explicit():
    assert GenerationRequest(**BASE, strength=0.5, seed=None).explicit == ("negative_prompt", "strength")
