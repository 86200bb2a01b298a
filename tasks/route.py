"""Route: decide, per asset, the recipe, provider, model and finishing — and say why.

The profile's routing table is ordered: each rule globs the source's path (`match`) and tests the
asset's record and size (`when`); the first rule whose conditions all hold decides, else the default
recipe on the default provider. The rule then changes the recipe: provider (a named provider block,
or `cheapest` — the cheapest provider whose recorded pass rate for this client and recipe is at least
the profile's floor, the default without enough history), model, generation parameters, added steps
(e.g. an upscale to 4096 px for `print`), gate thresholds, prompt template, LoRAs, control, seed policy, and
the publish target (a named target of the profile, e.g. `print-s3` for channel `print`).
`route_for` returns the decision with a trace of every rule (matched, failed with the reason, not
reached) for `brandforge route --explain`.

The recipe key hashes everything that decides the output (recipe, palette, logo bytes, prompt
template, gates, provider and model), so changing any of it redoes the assets it applies to and
nothing else.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task

from brandforge.blocks.client_profile import ClientProfile
from brandforge.models import (
    CHEAPEST,
    RECIPE_KEY_OPTIONAL,
    AssetRecord,
    LoadedAsset,
    Recipe,
    RoutingRule,
    content_hash,
    stable_hash,
)


@dataclass
class RuleCheck:
    """One rule as the router saw it for one asset."""

    rule: str
    outcome: str  # "matched", "no match", "not reached"
    reason: str = ""


@dataclass
class Route:
    """The router's decision for one asset."""

    recipe: Recipe
    provider: str = "default"  # the name in the profile's providers
    target: str = "default"  # the name in the profile's targets
    model: str | None = None  # the route's model, when it overrides the block's
    gates: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    rule: str | None = None  # the rule that decided; None = the default route
    cost_aware: bool = False
    trace: list[RuleCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def asset_facts(name: str, record: AssetRecord | None, width: int | None = None, height: int | None = None) -> dict[str, Any]:
    """What routing conditions test: the record's fields and the source's size."""
    facts: dict[str, Any] = dict(record.model_dump(include={"name", "category", "style", "colours", "tags", "locale",
                                                            "channel", "priority"})) if record else {}
    facts["target"] = facts.get("channel")
    if width and height:
        facts.update(width=width, height=height, long_side=max(width, height))
    return facts


def condition_fails(field_name: str, cond: Any, facts: dict[str, Any]) -> str | None:
    """Why a condition does not hold for these facts, or None when it holds."""
    value = facts.get(field_name)
    if value is None or value == []:
        return f"{field_name} is not set (rule wants {cond!r})"
    if isinstance(cond, dict):
        lo, hi = cond.get("min"), cond.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return f"{field_name} is {value} (rule wants {cond})"
        return None
    wanted = {str(c).lower() for c in (cond if isinstance(cond, list) else [cond])}
    have = [str(v).lower() for v in (value if isinstance(value, list) else [value])]
    if field_name == "locale":
        ok = any(h in wanted or h.split("-")[0] in wanted for h in have)
    else:
        ok = any(h in wanted for h in have)
    if ok:
        return None
    shown = value if isinstance(value, list) else repr(value)
    return f"{field_name} is {shown} (rule wants {cond if isinstance(cond, list) else repr(cond)})"


def rule_fails(rule: RoutingRule, name: str, facts: dict[str, Any]) -> str | None:
    if not (fnmatch.fnmatch(name, rule.match) or fnmatch.fnmatch(Path(name).name, rule.match)):
        return f"path {name!r} does not match {rule.match!r}"
    for field_name, cond in rule.when.items():
        why = condition_fails(field_name, cond, facts)
        if why:
            return why
    return None


def apply_rule(recipe: Recipe, rule: RoutingRule) -> Recipe:
    """The recipe as the rule changes it (validated again: a rule's params go through the same bounds)."""
    data = recipe.model_dump()
    data.update(rule.params)
    if rule.style is not None:
        data["style"] = rule.style
    if rule.add_steps:
        chain = list(recipe.chain)
        at = len(chain) - 1 if chain and chain[-1].step == "encode" else len(chain)
        chain[at:at] = rule.add_steps
        data["chain"] = [s.model_dump() for s in chain]
    if rule.loras:
        data["loras"] = [*data["loras"], *(lo.model_dump() for lo in rule.loras)]
    if rule.control is not None:
        data["control"] = rule.control.model_dump()
    if rule.seed_policy is not None:
        data["seed_policy"] = rule.seed_policy
    return Recipe.model_validate(data)


def cheapest_provider(profile: ClientProfile, recipe: str, client: str) -> tuple[str, list[str]]:
    """Cost-aware choice: the cheapest provider (price per image) whose recorded pass rate for this client
    and recipe is at least the profile's floor over at least `pass_rate_min_samples` images; the default
    provider when none qualifies. Returns the name and a note per provider considered."""
    rates = profile.ledger.pass_rates(client, recipe)
    by_price = sorted(profile.provider_names(), key=lambda n: (profile.provider_block(n).price_per_image_usd,
                                                                profile.provider_names().index(n)))
    notes = []
    for name in by_price:
        price = profile.provider_block(name).price_per_image_usd
        passed, total = rates.get(name, (0, 0))
        if total < profile.pass_rate_min_samples:
            notes.append(f"{name} (${price:g}/image): {total} image(s) on record, needs {profile.pass_rate_min_samples}")
            continue
        rate = passed / total
        if rate >= profile.pass_rate_floor:
            notes.append(f"{name} (${price:g}/image): pass rate {rate:.0%} of {total} >= floor {profile.pass_rate_floor:.0%}: chosen")
            return name, notes
        notes.append(f"{name} (${price:g}/image): pass rate {rate:.0%} of {total} < floor {profile.pass_rate_floor:.0%}")
    notes.append("no provider qualifies: the default")
    return "default", notes


def route_for(name: str, profile: ClientProfile, record: AssetRecord | None = None, *, width: int | None = None,
              height: int | None = None, client: str | None = None) -> Route:
    """The routing decision for one asset, with the trace of every rule."""
    facts = asset_facts(name, record, width, height)
    trace: list[RuleCheck] = []
    chosen: tuple[int, RoutingRule] | None = None
    for i, rule in enumerate(profile.routing):
        label = rule.label(i)
        if chosen is not None:
            trace.append(RuleCheck(label, "not reached", f"rule {profile.routing[chosen[0]].label(chosen[0])} matched first"))
            continue
        why = rule_fails(rule, name, facts)
        if why:
            trace.append(RuleCheck(label, "no match", why))
        else:
            trace.append(RuleCheck(label, "matched"))
            chosen = (i, rule)
    if chosen is None:
        return Route(recipe=profile.recipe(profile.default_recipe), trace=trace)
    i, rule = chosen
    recipe = apply_rule(profile.recipe(rule.recipe or profile.default_recipe), rule)
    route = Route(recipe=recipe, provider=rule.provider or "default", model=rule.model, gates=dict(rule.gates),
                  template=rule.template, rule=rule.label(i), trace=trace, target=rule.target or "default")
    if rule.provider == CHEAPEST:
        route.provider, route.notes = cheapest_provider(profile, recipe.name, client or profile.client_id)
        route.cost_aware = True
    return route


def choose_recipe(name: str, profile: ClientProfile, record: AssetRecord | None = None) -> Recipe:
    """The recipe the routing table gives a source (the rule's changes applied)."""
    return route_for(name, profile, record).recipe


def recipe_key(recipe: Recipe, profile: ClientProfile, route: Route | None = None, template: str | None = None) -> str:
    """The recipe's content key for this client. A route to another provider (or model, or gates) and a
    versioned prompt template enter only when used, so the default route's keys stay what they were.
    A cost-aware route keys on `cheapest`, not on its pick: a shifting pick does not redo finished assets."""
    logo = Path(profile.logo_path) if profile.logo_path else None
    data = recipe.model_dump()
    for name, default in RECIPE_KEY_OPTIONAL.items():
        if data.get(name) == default:
            data.pop(name, None)
    block = profile.provider_block(route.provider if route else None)
    key: dict[str, Any] = {
        "recipe": data,
        "palette": profile.palette,
        "logo": content_hash(logo.read_bytes()) if logo and logo.is_file() else None,
        "default_style": profile.default_style,
        "prompt_template": profile.prompt_template if template is None else None,
        "gates": profile.gates.model_dump(),
        "provider": block.provider_name,
        "model": (route.model if route and route.model else None) or block.model,
    }
    if route and route.cost_aware:
        key["provider"], key["model"] = CHEAPEST, None
    elif route and route.provider != "default":
        key["route_provider"] = route.provider
    if route and route.gates:
        key["gates"] = {**key["gates"], **route.gates}
    if route and route.target != "default":  # published elsewhere: a new target's copy is made (the pixels are reused)
        key["route_target"] = route.target
    if template is not None:
        key["template"] = template
    return stable_hash(key)


@task(name="route-asset")
def route_asset(asset: LoadedAsset, profile: ClientProfile) -> tuple[Recipe, str]:
    """The recipe for this asset and its content key."""
    route = route_for(asset.name, profile, asset.record, width=asset.width, height=asset.height, client=asset.client)
    return route.recipe, recipe_key(route.recipe, profile, route)

