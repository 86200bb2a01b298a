"""Prompt: fill the client's template and build the provider-neutral request.

The prompt comes from the client's versioned Jinja2 templates when the profile names them (one per
category, a locale variant per language; tasks/templates.py), from a Jinja2 `prompt_template`, or from
the classic `str.format` template with five slots. Every path refuses a banned word in the result.

The seed follows the recipe's seed policy: `derived` (the recipe's seed when it sets one, else from
the source's content key: every run of the same source and recipe asks for the same pixels),
`fixed` (the recipe's seed for every asset: a brand character), `random` (drawn once per asset and
recorded in the ledger, so a rerun asks for the same). A record's pinned seed wins over all three.
The generation key (the generation store's address: only what decides the provider's pixels,
including the template's name and version) is stable; the output key adds the recipe (its
post-processing and gates) and is what publishes are deduplicated on.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from brandforge.blocks.client_profile import ClientProfile
from brandforge.blocks.control_maps import with_control_map
from brandforge.models import (
    AssetPlan,
    AssetRecord,
    GenerationRequest,
    InvalidInput,
    LoadedAsset,
    Recipe,
    describe_validation_error,
    stable_hash,
)
from brandforge.tasks.generation_store import generation_key
from brandforge.tasks.route import Route, choose_recipe, recipe_key, route_for
from brandforge.tasks.snapshot import recipe_snapshot
from brandforge.tasks.templates import (
    PromptTemplate,
    TemplateSet,
    context_slots,
    load_templates,
    palette_words,
    render_text,
    template_slots,
)

__all__ = ["asset_subject", "choose_recipe", "derive_seed", "make_request", "output_key", "plan_asset", "render_prompt",
           "subject_from_name"]


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


def profile_templates(profile: ClientProfile) -> TemplateSet | None:
    """The client's versioned templates, where its profile says they are; None when it names none."""
    return load_templates(profile.prompt_templates, profile.source) if profile.prompt_templates else None


def choose_template(asset: LoadedAsset, profile: ClientProfile, route: Route | None = None,
                    templates: TemplateSet | None = None) -> PromptTemplate | None:
    """The versioned template for this asset (record pin, rule, category; pinned version; locale variant)."""
    templates = templates if templates is not None else profile_templates(profile)
    if templates is None:
        return None
    return templates.choose(asset.record, pins=profile.template_pins, name=route.template if route else None)


@dataclass
class Prompt:
    text: str
    template: str | None = None  # name@version[/locale] of a versioned template
    caption: str | None = None


def write_prompt(asset: LoadedAsset, recipe: Recipe, profile: ClientProfile, notes: list[str], *,
                 template: PromptTemplate | None = None, now: datetime | None = None) -> Prompt:
    """The prompt (and caption) for this asset; InvalidInput names the template and slot of a missing
    slot, a sandbox refusal or a banned word. `now` is the injected clock of the context providers."""
    style = recipe.style or profile.default_style or "photograph"
    extra = ", ".join([recipe.extra_prompt, *notes]) if recipe.extra_prompt else ", ".join(notes)
    client = profile.display_name or profile.client_id
    words = palette_words(profile.palette, profile.palette_words)
    if template is None and "{{" not in profile.prompt_template and "{%" not in profile.prompt_template:
        text = render_prompt(profile.prompt_template, subject=asset_subject(asset), style=style, palette=profile.palette,
                             client=client, extra=extra)
        # The classic template has no Jinja slots; the banned-word check is the same.
        render_text("{{ text }}", "prompt_template", {"subject": asset_subject(asset), "style": style, "extra": extra,
                                                     "text": text}, profile.banned_words)
        return Prompt(text)
    context = context_slots(now or datetime.now(timezone.utc), profile.timezone, hemisphere=profile.hemisphere,
                            holidays=profile.holidays)
    slots = template_slots(subject=asset_subject(asset), style=style, client=client, extra=extra, palette=words,
                           palette_hex=profile.palette, tone=profile.tone, record=asset.record, context=context)
    if template is None:
        return Prompt(render_text(profile.prompt_template, "prompt_template", slots, profile.banned_words))
    text = render_text(template.text, template.ident, slots, profile.banned_words)
    if notes and not template.text.count("extra"):
        text = f"{text}, {', '.join(notes)}"  # a reviewer's note reaches the prompt even if the template has no {{ extra }}
    caption = render_text(template.caption, f"{template.ident} caption", slots, profile.banned_words) if template.caption else None
    return Prompt(text, template.ident, caption)


def pinned_recipe(recipe: Recipe, record: AssetRecord | None, width: int = 0, height: int = 0) -> Recipe:
    """The recipe with what the asset's record pins: its seed, its LoRAs, its aspect ratio (the recipe's
    width or height, else the source's long side, kept; the other side follows, in multiples of 8)."""
    if record is None or (record.seed is None and not record.loras and not record.aspect):
        return recipe
    data = recipe.model_dump()
    if record.seed is not None:
        data.update(seed=record.seed, seed_policy="fixed")
    if record.loras:
        data["loras"] = [*data["loras"], *(lo.model_dump() for lo in record.loras)]
    if record.aspect:
        aw, ah = (int(x) for x in record.aspect.split(":"))
        if recipe.width:
            w, h = recipe.width, recipe.width * ah / aw
        elif recipe.height:
            w, h = recipe.height * aw / ah, recipe.height
        else:
            side = min(4096, max(width, height, 64))
            w, h = (side, side * ah / aw) if aw >= ah else (side * aw / ah, side)
        data["width"], data["height"] = (max(64, min(4096, round(v / 8) * 8)) for v in (w, h))
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"recipe {recipe.name!r} with the record's pins: {describe_validation_error(exc)}") from exc


def choose_seed(asset: LoadedAsset, recipe: Recipe, profile: ClientProfile, rkey: str) -> int:
    """The asset's seed by the recipe's policy (before any regeneration moves it on)."""
    if recipe.seed_policy == "random" and recipe.seed is None:
        recorded = profile.ledger.first_seed(asset.client, asset.source_key, rkey)
        return recorded if recorded is not None else secrets.randbelow(2**32)
    return derive_seed(recipe, asset.source_key)


def make_request(asset: LoadedAsset, recipe: Recipe, profile: ClientProfile, review_notes: list[str] | None = None, *,
                 template: PromptTemplate | None = None, now: datetime | None = None, seed: int | None = None,
                 prompt: Prompt | None = None) -> GenerationRequest:
    """The GenerationRequest for this asset; bad recipe values raise InvalidInput naming the field.

    Each earlier 'regenerate' answer of a reviewer moves the seed on and adds its note to the
    prompt, so a regeneration asks for new pixels (and gets a new generation key).
    """
    notes = [n for n in (review_notes or []) if n.strip()]
    prompt = prompt or write_prompt(asset, recipe, profile, notes, template=template, now=now)
    base = seed if seed is not None else derive_seed(recipe, asset.source_key)
    # A recipe's seed is validated (0 … 2**32-1) with the recipe; only the regeneration offset wraps.
    seed = (base + 7_919 * len(review_notes or [])) % 2**32
    try:
        return recipe.generation_request(source_image=f"file://{asset.path}", prompt=prompt.text, seed=seed)
    except ValidationError as exc:
        raise InvalidInput(f"recipe {recipe.name!r}: {describe_validation_error(exc)}") from exc


@dataclass
class Planned:
    """Everything `plan_asset` decided, for the plan and for `route --explain`."""

    route: Route
    recipe: Recipe
    recipe_key: str
    template: PromptTemplate | None


def decide(asset: LoadedAsset, profile: ClientProfile, templates: TemplateSet | None = None) -> Planned:
    """Route the asset, apply its record's pins, choose its template and key the recipe."""
    route = route_for(asset.name, profile, asset.record, width=asset.width, height=asset.height, client=asset.client)
    recipe = pinned_recipe(route.recipe, asset.record, asset.width, asset.height)
    template = choose_template(asset, profile, route, templates)
    return Planned(route, recipe, recipe_key(recipe, profile, route, template.ident if template else None), template)


def request_params(request: GenerationRequest, recipe: Recipe, profile: ClientProfile, planned: Planned, prompt: Prompt) -> dict:
    """The parameters as the ledger and the outputs' metadata record them (what decided the image)."""
    params = {**request.model_dump(exclude={"source_image"}), "recipe": recipe.name, "style": recipe.style or profile.default_style}
    for name in ("loras", "control"):
        if not params.get(name):
            params.pop(name, None)
    if "loras" in params:
        params["loras"] = list(params["loras"])
    if recipe.seed_policy != "derived":
        params["seed_policy"] = recipe.seed_policy
    if planned.route.provider != "default" or planned.route.cost_aware:
        params["provider_ref"] = planned.route.provider
    if planned.route.rule:
        params["rule"] = planned.route.rule
    if planned.route.target != "default":
        params["target_ref"] = planned.route.target
    if prompt.template:
        params["template"] = prompt.template
    if prompt.caption:
        params["caption"] = prompt.caption
    return params


@task(name="plan-asset", task_run_name="plan {asset.name}", cache_policy=NO_CACHE)
def plan_asset(asset: LoadedAsset, profile: ClientProfile, now: datetime | None = None) -> AssetPlan:
    """Route (the recipe and its key), look the ledger up, and build the request and its keys.

    One task for three cheap steps: each Prefect task run costs API writes per asset, and
    route, ledger lookup and prompt take milliseconds (issue 11's per-asset overhead). `now` is the
    clock the prompt's context providers read (time of day, season, holiday); unset: the current time."""
    planned = decide(asset, profile)
    recipe, rkey, route = planned.recipe, planned.recipe_key, planned.route
    block = profile.provider_block(route.provider)
    provider, model = block.provider_name, route.model or block.model
    plan = AssetPlan(recipe=recipe, recipe_key=rkey, provider=provider, model=model, provider_ref=route.provider,
                     rule=route.rule, gates=route.gates, target_ref=route.target)
    done = profile.ledger.finished(asset.client, asset.source_key, rkey)
    if done:
        return plan.model_copy(update={"done": done})
    notes = profile.ledger.regeneration_notes(asset.client, asset.source_key, rkey)
    prompt = write_prompt(asset, recipe, profile, [n for n in notes if n.strip()], template=planned.template, now=now)
    request = make_request(asset, recipe, profile, notes, prompt=prompt, seed=choose_seed(asset, recipe, profile, rkey))
    # Structure control computed from the source (edges, depth, pose): the map is written next to the source
    # and its bytes' hash enters the generation key.
    request = with_control_map(request, Path(asset.path).parent, profile.control_models)
    gkey = generation_key(asset.source_key, request, provider, model, prompt.template)
    routed = block if model == block.model else block.model_copy(update={"model": model})
    snapshot = recipe_snapshot(recipe=recipe, request=request, prompt=prompt.text, template=prompt.template,
                               caption=prompt.caption, provider=routed, provider_ref=route.provider, profile=profile,
                               target=profile.target_block(route.target))
    return plan.model_copy(update={"request": request, "generation_key": gkey, "output_key": output_key(gkey, rkey),
                                   "params": request_params(request, recipe, profile, planned, prompt),
                                   "template": prompt.template, "caption": prompt.caption, "snapshot": snapshot})
