"""Prompt building: template slots, derived seeds, and what a 'regenerate' review changes."""

from __future__ import annotations

from brandforge.blocks.ledger import Ledger
from brandforge.models import LedgerEntry, LoadedAsset
from brandforge.tasks.prompt import make_request, render_prompt, subject_from_name


def asset() -> LoadedAsset:
    return LoadedAsset(client="demo", uri="file:///c/red-sneaker_01.jpg", name="shoes/red-sneaker_01.jpg", source_key="ab" * 32,
                       path="/tmp/x.png", width=64, height=64, original_format="JPEG")


def test_subject_and_template():
    assert subject_from_name("shoes/red-sneaker_01.jpg") == "red sneaker"
    assert render_prompt("{style} of {subject}, {extra}", subject="mug", style="oil painting", palette=[], client="c", extra="") == "oil painting of mug"


def test_seed_is_derived_from_the_source_and_stable(demo_profile):
    recipe = demo_profile.recipe("oil")
    a, b = make_request(asset(), recipe, demo_profile), make_request(asset(), recipe, demo_profile)
    assert a.seed == b.seed == int("ab" * 4, 16) and "oil painting of red sneaker" in a.prompt


def test_regenerate_notes_move_the_seed_and_reach_the_prompt(demo_profile, tmp_path):
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'l.db'}")
    ledger.record(LedgerEntry(client="demo", source_uri="u", source_key="s", recipe_key="r", state="failed",
                              reason="review: regenerate requested (aesthetic 4.9)", scores={"review": {"decision": "regenerate", "note": "brighter background"}}))
    ledger.record(LedgerEntry(client="demo", source_uri="u", source_key="s", recipe_key="r", state="failed", reason="generate: timeout"))
    notes = ledger.regeneration_notes("demo", "s", "r")
    assert notes == ["brighter background"]
    recipe = demo_profile.recipe("oil")
    first, again = make_request(asset(), recipe, demo_profile), make_request(asset(), recipe, demo_profile, notes)
    assert again.seed != first.seed and again.prompt.endswith("brighter background")


def test_a_derived_seed_is_not_the_recipes_and_a_recipe_seed_is(demo_profile):
    recipe = demo_profile.recipe("oil")
    assert "seed" not in make_request(asset(), recipe, demo_profile).explicit
    seeded = recipe.model_copy(update={"seed": 42})
    request = make_request(asset(), seeded, demo_profile, ["brighter"])
    assert request.seed == 42 + 7_919 and "seed" in request.explicit  # a regeneration moves the recipe's own seed on


def test_a_negative_seed_is_refused_on_the_event_path_too(demo_profile):
    import pytest

    from brandforge.models import InvalidInput

    broken = demo_profile.recipe("oil").model_copy(update={"seed": -5})  # as if saved before seeds were bounded
    with pytest.raises(InvalidInput, match=r"recipe 'oil': seed must be between 0 and 4294967295.*got -5"):
        make_request(asset(), broken, demo_profile)
