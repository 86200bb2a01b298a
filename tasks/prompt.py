"""Prompt: fill the client's template and build the provider-neutral request.

The seed is the recipe's when it sets one, else derived from the source's
content key, so every run of the same source and recipe asks for the same
pixels and the generation key (what the ledger and targets deduplicate on) is
stable.
"""

from __future__ import annotations

import re
from pathlib import Path

from prefect import task
from pydantic import ValidationError

from blocks.client_profile import ClientProfile
from models import GenerationRequest, InvalidInput, LoadedAsset, Recipe, describe_validation_error, stable_hash


def subject_from_name(name: str) -> str:
    """'shoes/red-sneaker_01.jpg' → 'red sneaker'."""
    stem = Path(name).stem
    words = re.sub(r"[_\-.]+", " ", stem)
    words = re.sub(r"\b\d+\b", " ", words)
    return " ".join(words.split()) or "product"


def render_prompt(template: str, *, subject: str, style: str, palette: list[str], client: str, extra: str) -> str:
    text = template.format(subject=subject, style=style, palette=", ".join(palette), client=client, extra=extra)
    return " ".join(text.replace(" ,", ",").split()).strip(" ,")


def derive_seed(recipe: Recipe, source_key: str) -> int:
    return recipe.seed if recipe.seed is not None else int(source_key[:8], 16)


def generation_key(source_key: str, recipe_key: str, request: GenerationRequest, provider: str, model: str) -> str:
    return stable_hash(
        {"source": source_key, "recipe": recipe_key, "prompt": request.prompt, "prompt_2": request.prompt_2,
         "seed": request.seed, "provider": provider, "model": model}
    )


def make_request(asset: LoadedAsset, recipe: Recipe, profile: ClientProfile, review_notes: list[str] | None = None) -> GenerationRequest:
    """The GenerationRequest for this asset; bad recipe values raise InvalidInput naming the field.

    Each earlier 'regenerate' answer of a reviewer moves the seed on and adds its note to the
    prompt, so a regeneration asks for new pixels (and gets a new generation key).
    """
    notes = [n for n in (review_notes or []) if n.strip()]
    style = recipe.style or profile.default_style or "photograph"
    extra = ", ".join([recipe.extra_prompt, *notes]) if recipe.extra_prompt else ", ".join(notes)
    prompt = render_prompt(
        profile.prompt_template, subject=subject_from_name(asset.name), style=style,
        palette=profile.palette, client=profile.display_name or profile.client_id, extra=extra,
    )
    # A recipe's seed is validated (0 … 2**32-1) with the recipe; only the regeneration offset wraps.
    seed = (derive_seed(recipe, asset.source_key) + 7_919 * len(review_notes or [])) % 2**32
    try:
        return recipe.generation_request(source_image=f"file://{asset.path}", prompt=prompt, seed=seed)
    except ValidationError as exc:
        raise InvalidInput(f"recipe {recipe.name!r}: {describe_validation_error(exc)}") from exc


@task(name="build-request")
def build_request(
    asset: LoadedAsset, recipe: Recipe, recipe_key: str, profile: ClientProfile, review_notes: list[str] | None = None
) -> tuple[GenerationRequest, str]:
    """The request and its generation key."""
    request = make_request(asset, recipe, profile, review_notes)
    key = generation_key(asset.source_key, recipe_key, request, profile.provider.provider_name, profile.provider.model)
    return request, key
