"""Versioned Jinja2 prompt templates: context providers with an injected clock, locale variants, pinning,
and the errors (missing slot, banned word, sandbox escape) naming template and slot."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from prefect.filesystems import LocalFileSystem

from brandforge.models import AssetRecord, InvalidInput, LoadedAsset
from brandforge.tasks.prompt import decide, plan_asset, write_prompt
from brandforge.tasks.profiles import check_templates
from brandforge.tasks.templates import context_slots, parse_templates

CHRISTMAS_EVE = datetime(2026, 12, 24, 7, 30, tzinfo=timezone.utc)

TEMPLATES = {"templates": [
    {"name": "kitchen", "version": 1, "categories": ["kitchen"],
     "text": "{{ style }} of {{ subject }} on a {{ context.season }} {{ context.time_of_day }} table"},
    {"name": "kitchen", "version": 2, "categories": ["kitchen"],
     "text": "{{ style }} of {{ subject }}, {{ context.time_of_day }} light, {{ brand.palette | join(' and ') }} accents"
             "{% if context.holiday %}, {{ context.holiday }} mood{% endif %}",
     "caption": "{{ subject }}"},
    {"name": "kitchen", "version": 2, "locale": "de-DE", "categories": ["kitchen"],
     "text": "{{ style }} von {{ subject }} am {{ context.weekday }}", "caption": "{{ subject }} in der Küche"},
    {"name": "outdoor", "version": 1, "categories": ["garden"], "text": "{{ subject }} in the {{ event.weather }}"},
    {"name": "any", "version": 1, "text": "{{ style }} of {{ subject }} for {{ client }}"},
]}


def asset(record: AssetRecord | None = None, name: str = "mug.jpg") -> LoadedAsset:
    return LoadedAsset(client="demo", uri=f"file:///c/{name}", name=name, source_key="ab" * 32, path="/tmp/x.png",
                       width=640, height=480, original_format="JPEG", record=record)


@pytest.fixture
def profile(demo_profile, tmp_path):
    (tmp_path / "templates.json").write_text(json.dumps(TEMPLATES))
    return demo_profile.model_copy(update={"prompt_templates": str(tmp_path / "templates.json"), "timezone": "Europe/Berlin"})


def test_context_providers_read_the_injected_clock_at_the_clients_timezone():
    berlin = context_slots(CHRISTMAS_EVE, "Europe/Berlin")
    assert berlin | {"timezone": None} == {"time_of_day": "morning", "season": "winter", "holiday": "Christmas Eve",
                                           "date": "2026-12-24", "weekday": "Thursday", "hour": 8, "timezone": None}
    sydney = context_slots(CHRISTMAS_EVE, "Australia/Sydney", hemisphere="south")
    assert (sydney["time_of_day"], sydney["season"], sydney["hour"]) == ("evening", "summer", 18)
    la = context_slots(CHRISTMAS_EVE, "America/Los_Angeles", holidays={"12-23": "Festivus"})
    assert (la["time_of_day"], la["holiday"], la["date"]) == ("night", "Festivus", "2026-12-23")  # the local date decides
    assert context_slots(datetime(2026, 7, 4, 15, tzinfo=timezone.utc), "UTC", holidays={"2026-07-04": "Launch day"})["holiday"] == "Launch day"
    with pytest.raises(InvalidInput, match="timezone 'Mars/Olympus' is not an IANA time zone"):
        context_slots(CHRISTMAS_EVE, "Mars/Olympus")


def test_category_template_with_context_slots_latest_version(profile):
    kitchen = asset(AssetRecord(name="Stoneware Mug", category="kitchen"))
    planned = decide(kitchen, profile)
    prompt = write_prompt(kitchen, planned.recipe, profile, [], template=planned.template, now=CHRISTMAS_EVE)
    assert prompt.template == "kitchen@2"
    assert prompt.text == "flat poster illustration of Stoneware Mug, morning light, navy and gold and cream and blue and terracotta accents, Christmas Eve mood"
    other = asset(AssetRecord(category="toys"), name="robot.jpg")  # no template for toys: the one for any category
    assert decide(other, profile).template.ident == "any@1"


def test_locale_variant_and_localized_caption(profile):
    german = asset(AssetRecord(name="Steinzeugbecher", category="kitchen", locale="de-DE"))
    planned = decide(german, profile)
    prompt = write_prompt(german, planned.recipe, profile, [], template=planned.template, now=CHRISTMAS_EVE)
    assert (prompt.template, prompt.text, prompt.caption) == (
        "kitchen@2/de-DE", "flat poster illustration von Steinzeugbecher am Thursday", "Steinzeugbecher in der Küche")
    austrian = asset(AssetRecord(name="Becher", category="kitchen", locale="de-AT"))  # the language's variant
    assert decide(austrian, profile).template.ident == "kitchen@2/de-DE"


def test_event_values_reach_the_prompt_and_a_missing_one_names_the_slot(profile):
    rainy = asset(AssetRecord(name="Watering Can", category="garden", context={"weather": "rain"}), name="can.jpg")
    planned = decide(rainy, profile)
    assert write_prompt(rainy, planned.recipe, profile, [], template=planned.template, now=CHRISTMAS_EVE).text == "Watering Can in the rain"
    dry = asset(AssetRecord(name="Watering Can", category="garden"), name="can.jpg")
    with pytest.raises(InvalidInput, match=r"prompt template outdoor@1: slot 'weather' is missing"):
        write_prompt(dry, planned.recipe, profile, [], template=decide(dry, profile).template, now=CHRISTMAS_EVE)


def test_banned_word_names_template_and_slot(profile):
    banned = profile.model_copy(update={"banned_words": ["cheap"]})
    cheap = asset(AssetRecord(name="Cheap Mug", category="kitchen"))
    with pytest.raises(InvalidInput, match=r"prompt template kitchen@2: banned word 'cheap' in the prompt \(from slot 'subject'\)"):
        write_prompt(cheap, profile.recipe("poster"), banned, [], template=decide(cheap, banned).template, now=CHRISTMAS_EVE)
    classic = banned.model_copy(update={"prompt_templates": None})  # the str.format template is checked too
    with pytest.raises(InvalidInput, match=r"prompt_template: banned word 'cheap'.*slot 'subject'"):
        write_prompt(cheap, profile.recipe("poster"), classic, [])


def test_sandbox_escape_and_syntax_errors_are_refused(profile, tmp_path):
    escape = profile.model_copy(update={"prompt_templates": None, "prompt_template": "{{ ''.__class__.__mro__ }} {{ subject }}"})
    with pytest.raises(InvalidInput, match=r"prompt template prompt_template: sandbox refused '__class__'"):
        write_prompt(asset(), profile.recipe("poster"), escape, [], now=CHRISTMAS_EVE)
    with pytest.raises(InvalidInput, match=r"prompt templates .*: template any@1 .*|syntax error on line 1"):
        parse_templates(json.dumps({"templates": [{"name": "any", "version": 1, "text": "{{ subject "}]}), "t.json")
    (tmp_path / "bad.yaml").write_text("templates:\n  - {name: any, version: 1, text: 'x'}\n  - {name: any, version: 1, text: 'y'}\n")
    with pytest.raises(InvalidInput, match=r"template any@1 is defined twice"):
        check_templates(profile.model_copy(update={"prompt_templates": str(tmp_path / "bad.yaml")}))


def test_pinned_version_and_which_assets_a_new_version_redoes(profile):
    kitchen, toy = asset(AssetRecord(category="kitchen")), asset(AssetRecord(category="toys"), name="robot.jpg")
    pinned = profile.model_copy(update={"template_pins": {"kitchen": 1}})
    assert decide(kitchen, pinned).template.ident == "kitchen@1"
    # v2 changes the kitchen asset's recipe key (it is redone) and leaves the toy's alone (it is skipped).
    assert decide(kitchen, pinned).recipe_key != decide(kitchen, profile).recipe_key
    assert decide(toy, pinned).recipe_key == decide(toy, profile).recipe_key
    # A record may pin its own template version.
    assert decide(asset(AssetRecord(category="kitchen", template="kitchen@1")), profile).template.ident == "kitchen@1"
    with pytest.raises(InvalidInput, match=r"template_pins: template 'kitchen' has no version 9"):
        check_templates(profile.model_copy(update={"template_pins": {"kitchen": 9}}))


def test_template_name_and_version_enter_the_generation_key_and_ledger_params(profile):
    kitchen = asset(AssetRecord(name="Mug", category="kitchen"))
    v2 = plan_asset.fn(kitchen, profile, now=CHRISTMAS_EVE)
    v1 = plan_asset.fn(kitchen, profile.model_copy(update={"template_pins": {"kitchen": 1}}), now=CHRISTMAS_EVE)
    assert v2.params["template"] == "kitchen@2" and v1.params["template"] == "kitchen@1"
    assert v2.generation_key != v1.generation_key and v2.caption == "Mug"
    assert plan_asset.fn(kitchen, profile, now=CHRISTMAS_EVE).generation_key == v2.generation_key  # same clock, same key


def test_templates_from_the_source_storage(profile, tmp_path):
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "prompts.yaml").write_text("- {name: any, version: 3, text: '{{ subject }} at {{ context.time_of_day }}'}\n")
    stored = profile.model_copy(update={"prompt_templates": "source:prompts.yaml",
                                        "source": LocalFileSystem(basepath=str(tmp_path / "catalog"))})
    planned = decide(asset(), stored)
    assert write_prompt(asset(), planned.recipe, stored, [], template=planned.template, now=CHRISTMAS_EVE).text == "mug at morning"
