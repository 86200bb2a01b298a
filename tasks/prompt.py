"""Prompt: fill the client's template and build the provider-neutral request.

The seed is the recipe's when it sets one, else derived from the source's
content key, so every run of the same source and recipe asks for the same
pixels and the generation key (the generation store's address: only what
decides the provider's pixels) is stable; the output key adds the recipe (its
post-processing and gates) and is what publishes are deduplicated on.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect import task
from pydantic import ValidationError

from brandforge.blocks.client_profile import ClientProfile
from brandforge.models import AssetPlan, GenerationRequest, InvalidInput, LoadedAsset, Recipe, describe_validation_error, stable_hash
from brandforge.tasks.generation_store import generation_key
from brandforge.tasks.route import choose_recipe, recipe_key


def subject_from_name(name: str) -> str:
    """'shoes/red-sneaker_01.jpg' → 'red sneaker'."""
    stem = Path(name).stem
    words = re.sub(r"[_\-.]+", " ", stem)
    words = re.sub(r"\b\d+\b", " ", words)
    return " ".join(words.split()) or "product"


def asset_subject(asset: LoadedAsset) -> str:
    """The prompt's subject: the record's product name when there is one, else words of the file name."""
    return asset.record.name if asset.record and asset.record.name else subject_from_name(asset.name)


def render_prompt(template: str, *, subject: str, style: str, palette: list[str], client: str, extra: str) -> str:
    text = template.format(subject=subject, style=style, palette=", ".join(palette), client=client, extra=extra)
    return " ".join(text.replace(" ,", ",").split()).strip(" ,")


def derive_seed(recipe: Recipe, source_key: str) -> int:
    return recipe.seed if recipe.seed is not None else int(source_key[:8], 16)


def output_key(generation_key: str, recipe_key: str) -> str:
    """A generation through one recipe's post-processing and gates: what a publish is keyed on."""
    return stable_hash({"generation": generation_key, "recipe": recipe_key})


def make_request(asset: LoadedAsset, recipe: Recipe, profile: ClientProfile, review_notes: list[str] | None = None) -> GenerationRequest:
    """The GenerationRequest for this asset; bad recipe values raise InvalidInput naming the field.

    Each earlier 'regenerate' answer of a reviewer moves the seed on and adds its note to the
    prompt, so a regeneration asks for new pixels (and gets a new generation key).
    """
    notes = [n for n in (review_notes or []) if n.strip()]
    style = recipe.style or profile.default_style or "photograph"
    extra = ", ".join([recipe.extra_prompt, *notes]) if recipe.extra_prompt else ", ".join(notes)
    prompt = render_prompt(
        profile.prompt_template, subject=asset_subject(asset), style=style,
        palette=profile.palette, client=profile.display_name or profile.client_id, extra=extra,
    )
    # A recipe's seed is validated (0 … 2**32-1) with the recipe; only the regeneration offset wraps.
    seed = (derive_seed(recipe, asset.source_key) + 7_919 * len(review_notes or [])) % 2**32
    try:
        return recipe.generation_request(source_image=f"file://{asset.path}", prompt=prompt, seed=seed)
    except ValidationError as exc:
        raise InvalidInput(f"recipe {recipe.name!r}: {describe_validation_error(exc)}") from exc


@task(name="plan-asset", task_run_name="plan {asset.name}")
def plan_asset(asset: LoadedAsset, profile: ClientProfile) -> AssetPlan:
    """Route (the recipe and its key), look the ledger up, and build the request and its keys.

    One task for three cheap steps: each Prefect task run costs API writes per asset, and
    route, ledger lookup and prompt take milliseconds (issue 11's per-asset overhead)."""
    recipe = choose_recipe(asset.name, profile)
    rkey = recipe_key(recipe, profile)
    provider, model = profile.provider.provider_name, profile.provider.model
    plan = AssetPlan(recipe=recipe, recipe_key=rkey, provider=provider, model=model)
    done = profile.ledger.finished(asset.client, asset.source_key, rkey)
    if done:
        return plan.model_copy(update={"done": done})
    notes = profile.ledger.regeneration_notes(asset.client, asset.source_key, rkey)
    request = make_request(asset, recipe, profile, notes)
    gkey = generation_key(asset.source_key, request, provider, model)
    params = {**request.model_dump(exclude={"source_image"}), "recipe": recipe.name,
              "style": recipe.style or profile.default_style}
    return plan.model_copy(update={"request": request, "generation_key": gkey, "output_key": output_key(gkey, rkey),
                                   "params": params})
