"""Route: pick the client's recipe for a source, and fix the recipe's content key.

Rules are globs over the source's path inside the catalog; the first match
wins, else the profile's default recipe. The recipe key hashes everything that
decides the output (recipe, palette, logo bytes, prompt template, gates,
provider and model), so changing any of it redoes the asset and nothing else.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from prefect import task

from brandforge.blocks.client_profile import ClientProfile
from brandforge.models import LoadedAsset, Recipe, content_hash, stable_hash


def choose_recipe(name: str, profile: ClientProfile) -> Recipe:
    for rule in profile.routing:
        if fnmatch.fnmatch(name, rule.match) or fnmatch.fnmatch(Path(name).name, rule.match):
            return profile.recipe(rule.recipe)
    return profile.recipe(profile.default_recipe)


def recipe_key(recipe: Recipe, profile: ClientProfile) -> str:
    logo = Path(profile.logo_path) if profile.logo_path else None
    return stable_hash(
        {
            "recipe": recipe.model_dump(),
            "palette": profile.palette,
            "logo": content_hash(logo.read_bytes()) if logo and logo.is_file() else None,
            "default_style": profile.default_style,
            "prompt_template": profile.prompt_template,
            "gates": profile.gates.model_dump(),
            "provider": profile.provider.provider_name,
            "model": profile.provider.model,
        }
    )


@task(name="route-asset")
def route_asset(asset: LoadedAsset, profile: ClientProfile) -> tuple[Recipe, str]:
    """The recipe for this asset and its content key."""
    recipe = choose_recipe(asset.name, profile)
    return recipe, recipe_key(recipe, profile)
