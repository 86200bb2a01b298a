"""Wire maps: what each provider is sent for a recipe's parameters, set or unset, over HTTP to the fakes.

A recipe that leaves a parameter unset gets the contract's default, converted
the provider's way, and no warning; an unset parameter a provider cannot honour
(OpenAI's seed, InstructPix2Pix's strength) is not sent; a set one is refused
before any call.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from brandforge.blocks.providers.diffusers_local import DiffusersProvider
from brandforge.blocks.providers.local_engine import LocalEngine
from brandforge.models import PARAM_NAMES, Recipe, Rejected
from brandforge.tasks.generate import run_generation
from tests.providers.cases import all_cases

CASES = {c.name: c for c in all_cases()}
DERIVED_SEED = 0xAB12CD34  # what tasks/prompt.py derives from a source key


def run(block, request):
    return asyncio.run(run_generation(request, block, poll_every=0.05, deadline_s=20, base_delay=0.05, use_limits=False))


def recipe_request(source_png, **recipe_fields):
    """The request the pipeline builds for a recipe (tasks/prompt.py make_request): a derived seed."""
    return Recipe(name="r", **recipe_fields).generation_request(
        source_image=f"file://{source_png}", prompt="watercolour of a red mug", seed=DERIVED_SEED)


def sent(fake) -> dict:
    last = fake.requests[-1]
    if "fields" in last:
        return last["fields"]
    body = last["body"]
    return body.get("input", body)


# provider -> (wire name, what the contract's default strength 0.8 becomes there)
DEFAULT_STRENGTH = {
    "replicate": ("prompt_strength", 0.8),
    "fal": ("strength", 0.8),
    "stability": ("strength", "0.8"),
    "openai": ("input_fidelity", "low"),
    "leonardo": ("init_strength", 0.2),
}


@pytest.mark.parametrize("provider", list(DEFAULT_STRENGTH), indirect=True)
def test_a_recipe_without_strength_sends_the_documented_default_mapping_and_no_warning(provider, source_png, caplog):
    fake, block = provider
    caplog.set_level(logging.WARNING)
    request = recipe_request(source_png)
    assert "strength" not in request.explicit and request.strength == 0.8
    run(block, request)
    name, value = DEFAULT_STRENGTH[fake.name]
    assert sent(fake)[name] == (pytest.approx(value) if isinstance(value, float) else value)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.message for r in caplog.records]


@pytest.mark.parametrize("provider", ["replicate", "fal", "stability", "leonardo"], indirect=True)
def test_providers_with_seeds_get_the_derived_seed(provider, source_png):
    fake, block = provider
    run(block, recipe_request(source_png))
    assert int(sent(fake)["seed"]) == DERIVED_SEED


@pytest.mark.parametrize("provider", ["openai"], indirect=True)
def test_openai_jobs_without_a_recipe_seed_send_none(provider, source_png, caplog):
    fake, block = provider
    caplog.set_level(logging.WARNING)
    request = recipe_request(source_png)
    assert request.seed == DERIVED_SEED and "seed" not in request.explicit
    run(block, request)
    assert "seed" not in sent(fake) and not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("provider", ["openai"], indirect=True)
def test_a_recipe_seed_on_openai_is_refused_before_any_call(provider, source_png):
    fake, block = provider
    with pytest.raises(Rejected, match=r"seed is not supported by openai \(image edits have no seed"):
        run(block, recipe_request(source_png, seed=42))
    assert fake.requests == [] and fake.stats["submits"] == 0


@pytest.mark.parametrize("provider", ["stability"], indirect=True)
def test_a_refusal_names_every_field_at_once(provider, source_png):
    fake, block = provider
    with pytest.raises(Rejected) as info:
        run(block, recipe_request(source_png, steps=30, prompt_2="studio light", batch_size=2))
    assert {"steps", "prompt_2", "batch_size"} <= {part.split()[0].split("=")[0] for part in str(info.value).split("; ")}
    assert fake.requests == []


def test_instruct_pix2pix_leaves_an_unset_strength_out_and_refuses_a_set_one(source_png, caplog):
    block = DiffusersProvider(model_path="unused", pipeline="instruct-pix2pix")
    caplog.set_level(logging.WARNING)
    kwargs = block.call_kwargs(recipe_request(source_png))
    assert "strength" not in kwargs and kwargs["image_guidance_scale"] == 1.5 and kwargs["num_inference_steps"] == 20
    assert not caplog.records
    with pytest.raises(Rejected, match="strength is not supported by diffusers"):
        block.check_request(recipe_request(source_png, strength=0.5))


@pytest.mark.parametrize("block", [c.name for c in all_cases()] + ["local", "diffusers"])
def test_every_provider_declares_every_parameter(block, tmp_path):
    if block == "local":
        provider = LocalEngine()
    elif block == "diffusers":
        provider = DiffusersProvider(model_path="unused", pipeline="sdxl")
    else:
        case = CASES[block]

        class Stub:
            url = "http://127.0.0.1:9"
            webhook_url = None

        provider = case.make_block(Stub(), None, tmp_path)
    assert set(provider.wire_map()) == set(PARAM_NAMES)
