"""The routing table: each example of issue 14, the checks when a profile is built, cost-aware routing,
seed policies, and LoRAs reaching the wire of the providers that take them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from pydantic import SecretStr, ValidationError

from brandforge.blocks.client_profile import ClientProfile
from brandforge.blocks.providers.fal import FalProvider
from brandforge.blocks.providers.local_engine import LocalEngine
from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.models import AssetRecord, LedgerEntry, LoadedAsset, LoraSpec, Recipe, Rejected, RoutingRule, StepSpec
from brandforge.tasks.prompt import plan_asset
from brandforge.tasks.route import route_for

NOW = datetime(2026, 5, 4, 10, tzinfo=timezone.utc)
FLUX = "fal-ai/flux/dev/image-to-image"
SDXL = "stability-ai/sdxl"
BRAND_LORA = LoraSpec(weights="https://example.com/acme-brand.safetensors", scale=0.8)


def asset(record: AssetRecord | None = None, name: str = "mug.jpg", size: tuple[int, int] = (640, 480)) -> LoadedAsset:
    return LoadedAsset(client="demo", uri=f"file:///c/{name}", name=name, source_key="cd" * 32, path="/tmp/x.png",
                       width=size[0], height=size[1], original_format="JPEG", record=record)


def with_rules(profile: ClientProfile, rules: list[dict], **update) -> ClientProfile:
    """The profile rebuilt (so its validators run) with these providers and rules."""
    data = {name: getattr(profile, name) for name in ClientProfile.model_fields}
    data.update(providers={**profile.providers, "fal": FalProvider(model=FLUX, api_key=SecretStr("k"), price_per_image_usd=0.025),
                           "replicate": ReplicateProvider(model=SDXL, api_key=SecretStr("k"), price_per_image_usd=0.012),
                           "budget": LocalEngine(job_dir=profile.provider.job_dir, price_per_image_usd=0.001)},
                routing=[RoutingRule.model_validate(r) for r in rules], **update)
    return ClientProfile(**data)


RULES = [
    {"name": "photoreal", "when": {"style": "photorealistic"}, "provider": "fal"},
    {"name": "illustrated", "when": {"style": "illustration"}, "provider": "replicate", "loras": [BRAND_LORA.model_dump()]},
    {"name": "print", "when": {"target": "print"}, "add_steps": [{"step": "upscale", "params": {"long_side": 4096}}],
     "gates": {"min_width": 1024}},
    {"name": "german", "when": {"locale": "de"}, "template": "kitchen"},
    {"name": "low-priority", "when": {"priority": "low"}, "provider": "cheapest"},
]


@pytest.fixture
def profile(demo_profile, tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"templates": [
        {"name": "kitchen", "version": 1, "text": "{{ style }} of {{ subject }}", "caption": "{{ subject }}"},
        {"name": "kitchen", "version": 1, "locale": "de-DE", "text": "{{ style }} von {{ subject }}",
         "caption": "{{ subject }}, fotografiert für {{ client }}"}]}))
    return with_rules(demo_profile, RULES, prompt_templates=str(tmp_path / "t.json"))


def test_style_photorealistic_goes_to_flux_on_fal(profile):
    plan = plan_asset.fn(asset(AssetRecord(style="photorealistic")), profile, now=NOW)
    assert (plan.rule, plan.provider_ref, plan.provider, plan.model) == ("photoreal", "fal", "fal", FLUX)
    routed = profile.routed(plan.provider_ref, plan.model, plan.gates)
    assert isinstance(routed.provider, FalProvider) and routed.provider.model == FLUX
    body = routed.provider.build_input(plan.request, "data:image/png;base64,AAAA")
    assert "loras" not in body and body["seed"] == plan.request.seed


def test_style_illustration_goes_to_sdxl_on_replicate_with_the_clients_lora(profile):
    plan = plan_asset.fn(asset(AssetRecord(style="illustration")), profile, now=NOW)
    assert (plan.provider_ref, plan.provider, plan.model) == ("replicate", "replicate", SDXL)
    assert plan.request.loras == (BRAND_LORA,) and plan.params["loras"] == [BRAND_LORA.model_dump()]
    inputs = profile.routed(plan.provider_ref).provider.build_input(plan.request, "data:image/png;base64,AAAA")
    assert (inputs["lora_weights"], inputs["lora_scale"]) == (BRAND_LORA.weights, 0.8)
    # The LoRA is part of the generation key: the same asset without it is another generation.
    bare = with_rules(profile, [{**RULES[1], "loras": []}], prompt_templates=profile.prompt_templates)
    assert plan_asset.fn(asset(AssetRecord(style="illustration")), bare, now=NOW).generation_key != plan.generation_key


def test_target_print_gains_an_upscale_to_4096_before_encode(profile):
    plan = plan_asset.fn(asset(AssetRecord(channel="print")), profile, now=NOW)
    steps = [s.step for s in plan.recipe.chain]
    assert plan.rule == "print" and steps[-2:] == ["upscale", "encode"]
    assert plan.recipe.chain[-2] == StepSpec(step="upscale", params={"long_side": 4096})
    assert profile.routed(gates=plan.gates).gates.min_width == 1024 and profile.gates.min_width == 256
    web = plan_asset.fn(asset(AssetRecord(channel="web")), profile, now=NOW)
    assert "upscale" not in [s.step for s in web.recipe.chain] and web.recipe_key != plan.recipe_key


def test_locale_de_gets_the_german_variant_and_a_localized_caption(profile):
    plan = plan_asset.fn(asset(AssetRecord(name="Becher", locale="de-DE")), profile, now=NOW)
    assert plan.rule == "german" and plan.template == "kitchen@1/de-DE"
    assert plan.request.prompt == "vintage film photograph von Becher"
    assert plan.caption == "Becher, fotografiert für Demo Co." and plan.params["caption"] == plan.caption


def record(ledger, provider_ref: str, passed: int, failed: int, recipe: str = "vintage") -> None:
    for i in range(passed + failed):
        ledger.record(LedgerEntry(client="demo", source_uri=f"u{provider_ref}{i}", recipe=recipe,
                                  state="published" if i < passed else "quarantined",
                                  params={"provider_ref": provider_ref} if provider_ref != "default" else {}))


def test_priority_low_takes_the_cheapest_provider_that_passes_often_enough(profile):
    low = asset(AssetRecord(priority="low"))
    first = route_for(low.name, profile, low.record)
    assert first.provider == "default" and first.cost_aware  # no history: the profile's default
    record(profile.ledger, "budget", passed=1, failed=3)  # cheapest, but fails the floor (25% < 80%)
    record(profile.ledger, "replicate", passed=9, failed=1)  # next cheapest: 90%
    record(profile.ledger, "fal", passed=5, failed=0)
    record(profile.ledger, "replicate", passed=0, failed=10, recipe="poster")  # another recipe's history does not count
    chosen = route_for(low.name, profile, low.record)
    assert chosen.provider == "replicate", chosen.notes
    assert any("budget" in n and "25% of 4 < floor 80%" in n for n in chosen.notes)
    plan = plan_asset.fn(low, profile, now=NOW)
    assert plan.provider_ref == "replicate" and plan.params["provider_ref"] == "replicate"
    # The recipe key names the policy, not its pick: a shifting pick does not redo finished assets.
    assert plan.recipe_key == plan_asset.fn(low, profile.model_copy(update={"pass_rate_floor": 1.0}), now=NOW).recipe_key


@pytest.mark.parametrize("rules, message", [
    ([{"name": "r1", "when": {"style": "x"}, "provider": "midjourney"}], r"routing rule r1: names provider 'midjourney'"),
    ([{"name": "r1", "add_steps": [{"step": "sharpen"}]}], r"routing rule r1: adds unknown step 'sharpen'"),
    ([{"name": "wide", "when": {"style": ["a", "b"]}}, {"name": "narrow", "when": {"style": "a", "locale": "de"}}],
     r"routing rule narrow: is shadowed by rule wide"),
    ([{"name": "all", "match": "*"}, {"name": "after", "when": {"tags": "x"}}], r"routing rule after: is shadowed by rule all"),
    ([{"name": "lang", "when": {"locale": "de"}}, {"name": "region", "when": {"locale": "de-AT"}}], r"rule region: is shadowed by rule lang"),
    ([{"name": "big", "when": {"long_side": {"min": 1000}}}, {"name": "huge", "when": {"long_side": {"min": 3000}}}],
     r"rule huge: is shadowed by rule big"),
    ([{"name": "r1", "when": {"colour": "red"}}], r"routing rule r1: condition on unknown field\(s\) \['colour'\]"),
    ([{"name": "r1", "when": {"category": {"min": 3}}}], r"routing rule r1: condition category: \{min, max\} ranges apply to"),
    ([{"name": "r1", "params": {"strength": 3}}], r"routing rule r1: params: strength must be between 0.01 and 1"),
    ([{"name": "r1", "gates": {"min_sharpnes": 3}}], r"routing rule r1: gates \['min_sharpnes'\] are not gate thresholds"),
    ([{"name": "r1", "recipe": "nope"}], r"routing rule r1: names recipe 'nope'"),
    ([{"name": "r1", "loras": [BRAND_LORA.model_dump()], "provider": "budget"}],
     r"routing rule r1: routes LoRAs to provider 'budget' \(local\), which cannot apply LoRAs"),
])
def test_rules_are_checked_when_the_profile_is_built(demo_profile, rules, message):
    with pytest.raises(ValidationError, match=message):
        with_rules(demo_profile, rules)


def test_narrower_rule_first_is_not_shadowed_and_unmatched_rules_say_why(demo_profile):
    profile = with_rules(demo_profile, [{"name": "narrow", "when": {"style": "a", "locale": "de"}},
                                        {"name": "wide", "when": {"style": ["a", "b"]}},
                                        {"name": "big", "when": {"long_side": {"min": 1000}}}])
    route = route_for("x.jpg", profile, AssetRecord(style="b", locale="fr-FR"), width=1200, height=800)
    assert route.rule == "wide"
    assert [(c.rule, c.outcome, c.reason) for c in route.trace] == [
        ("narrow", "no match", "style is 'b' (rule wants 'a')"), ("wide", "matched", ""),
        ("big", "not reached", "rule wide matched first")]


def test_legacy_glob_rules_keep_their_recipes_and_keys(demo_profile):
    """The demo's glob rules route as before, and the default route's recipe key is unchanged by routing."""
    assert route_for("ceramic-mug.webp", demo_profile).recipe.name == "poster"
    assert route_for("rocket-launch.jpg", demo_profile).rule is None
    with_providers = with_rules(demo_profile, [r.model_dump() for r in demo_profile.routing])
    a = asset(name="ceramic-mug.webp")
    assert plan_asset.fn(a, demo_profile).recipe_key == plan_asset.fn(a, with_providers).recipe_key


def test_seed_policies_give_byte_identical_requests_across_reruns(demo_profile):
    a = asset(name="rocket-launch.jpg")
    derived = plan_asset.fn(a, demo_profile)
    assert derived.request.seed == int("cd" * 4, 16) and plan_asset.fn(a, demo_profile).request == derived.request

    fixed = demo_profile.model_copy(update={"recipes": [r.model_copy(update={"seed_policy": "fixed", "seed": 1234})
                                                        for r in demo_profile.recipes]})
    other = asset(name="rocket-launch.jpg").model_copy(update={"source_key": "ef" * 32})
    assert plan_asset.fn(a, fixed).request.seed == plan_asset.fn(other, fixed).request.seed == 1234  # a brand character

    rnd = demo_profile.model_copy(update={"recipes": [r.model_copy(update={"seed_policy": "random"}) for r in demo_profile.recipes]})
    first = plan_asset.fn(a, rnd)
    assert first.params["seed_policy"] == "random"
    rnd.ledger.record(LedgerEntry(client="demo", source_uri=a.uri, source_key=a.source_key, recipe_key=first.recipe_key,
                                  seed=first.request.seed, state="failed", reason="generate: timeout"))
    rerun = plan_asset.fn(a, rnd)
    assert rerun.request.model_dump_json() == first.request.model_dump_json()  # the recorded draw, asked again
    assert rerun.generation_key == first.generation_key

    pinned = plan_asset.fn(a.model_copy(update={"record": AssetRecord(seed=99)}), demo_profile)
    assert pinned.request.seed == 99 and "seed" in pinned.request.explicit  # a CMS record's pinned seed


def test_record_pins_loras_and_aspect(demo_profile):
    profile = with_rules(demo_profile, [{"name": "lora", "when": {"tags": "brand"}, "provider": "fal"}])
    pinned = AssetRecord(tags=["brand"], loras=[BRAND_LORA], aspect="4:5")
    plan = plan_asset.fn(asset(pinned, name="rocket-launch.jpg"), profile, now=NOW)
    from brandforge.deployments.demo import WIDTH

    assert plan.request.loras == (BRAND_LORA,) and plan.request.height == WIDTH  # the vintage recipe's height
    assert abs(plan.request.width / plan.request.height - 0.8) < 0.02  # the record's 4:5
    body = profile.routed(plan.provider_ref).provider.build_input(plan.request, "data:,")
    assert body["loras"] == [{"path": BRAND_LORA.weights, "scale": 0.8}]


def test_providers_without_lora_support_refuse_them(demo_profile):
    recipe = Recipe(name="r", loras=[BRAND_LORA])
    request = recipe.generation_request(source_image="file:///x.png", prompt="p")
    with pytest.raises(Rejected, match="loras are not supported by local"):
        LocalEngine().check_request(request)
    with pytest.raises(ValidationError, match="recipe 'lora' has LoRAs but the default provider \\(local\\) cannot apply LoRAs"):
        ClientProfile(**{**{n: getattr(demo_profile, n) for n in ClientProfile.model_fields},
                         "recipes": [*demo_profile.recipes, recipe.model_copy(update={"name": "lora"})]})
    two = Recipe(name="r", loras=[BRAND_LORA, LoraSpec(weights="https://example.com/b.safetensors")])
    with pytest.raises(Rejected, match="replicate models take one LoRA"):
        ReplicateProvider(api_key=SecretStr("k")).build_input(two.generation_request(source_image="file:///x.png", prompt="p"), "data:,")


def test_control_reaches_replicate_as_an_edge_map_and_is_refused_elsewhere(demo_profile, tmp_path):
    from PIL import Image

    from brandforge.blocks.providers.http import decode_data_uri
    from brandforge.models import ControlSpec

    src = tmp_path / "src.png"
    img = Image.new("RGB", (96, 96), "white")
    img.paste((0, 0, 0), (24, 24, 72, 72))
    img.save(src)
    recipe = Recipe(name="r", control=ControlSpec(kind="edges", scale=0.6))
    request = recipe.generation_request(source_image=f"file://{src}", prompt="p")
    inputs = ReplicateProvider(api_key=SecretStr("k")).build_input(request, "data:,")
    assert inputs["controlnet_conditioning_scale"] == 0.6
    edges = Image.open(__import__("io").BytesIO(decode_data_uri(inputs["control_image"])))
    assert edges.size == (96, 96) and edges.getextrema() == (0, 255)  # the square's outline
    depth = Recipe(name="r", control=ControlSpec(kind="depth")).generation_request(source_image=f"file://{src}", prompt="p")
    with pytest.raises(Rejected, match="replicate computes no depth map"):
        ReplicateProvider(api_key=SecretStr("k")).build_input(depth, "data:,")
    with pytest.raises(Rejected, match="control: fal takes ControlNets on its fal-ai/flux-general endpoints only"):
        FalProvider(api_key=SecretStr("k"), model=FLUX).check_request(request)
    with pytest.raises(ValidationError, match="routes edges control to provider 'fal' \\(fal\\), but fal takes ControlNets"):
        with_rules(demo_profile, [{"name": "r1", "provider": "fal", "control": {"kind": "edges"}}])
    # Control is part of the generation key (plain requests keep theirs).
    assert "control" in request.model_dump() and with_rules(demo_profile, [{"name": "r1", "provider": "replicate",
                                                                             "control": {"kind": "edges"}}])
