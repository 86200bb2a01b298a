"""ClientProfile: everything brandforge knows about one client, as a Prefect block.

Brand (palette, logo, default style, prompt template), recipes and the rules
that route sources to them, quality thresholds, where sources come from, which
provider generates, where results go, and the budget. Teams edit it in the
Prefect UI; flows load it by name. Validation names the field and the allowed
values, so a bad profile fails before any image is touched.
"""

from __future__ import annotations

import re
import string
from typing import Literal, Union, get_args

from prefect.blocks.core import Block
from prefect.filesystems import LocalFileSystem
from prefect_aws import S3Bucket
from pydantic import BaseModel, Field, SecretStr, SerializationInfo, ValidationInfo, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from brandforge.blocks.aesthetic import AestheticModel
from brandforge.blocks.c2pa_signer import C2paSigner
from brandforge.blocks.ledger import Ledger
from brandforge.blocks.providers.diffusers_local import DiffusersProvider
from brandforge.blocks.providers.fal import FalProvider
from brandforge.blocks.providers.leonardo import LeonardoProvider
from brandforge.blocks.providers.local_engine import LocalEngine
from brandforge.blocks.providers.openai_images import OpenAIImagesProvider
from brandforge.blocks.providers.replicate import ReplicateProvider, ReplicateRefiner
from brandforge.blocks.providers.stability import StabilityProvider, StabilityRefiner
from brandforge.blocks.targets.gallery import LocalGallery
from brandforge.blocks.targets.s3 import S3Target
from brandforge.blocks.targets.strapi import StrapiSite
from brandforge.blocks.targets.wordpress import WordPressSite
from brandforge.blocks.triggers import SnsSettings, StrapiTrigger
from brandforge.blocks.url_guard import allow_entry_problem
from brandforge.models import (
    CHAIN_STEPS,
    CHEAPEST,
    ROUTE_FIELDS,
    ROUTE_NUMERIC,
    GateThresholds,
    GenerationParams,
    InvalidInput,
    Recipe,
    RoutingRule,
    describe_validation_error,
)
from pydantic import ValidationError

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
PROMPT_SLOTS = {"subject", "style", "palette", "client", "extra"}
MAX_TEMPLATE_CHARS = 2000
SHARED_BLOCK_PREFIX = "shared-"


def owns_block(client_id: str, block_name: str) -> bool:
    """Tenancy rule for saved blocks a profile names: a client uses its own blocks (named after it:
    `acme`, `acme-replicate`) and blocks explicitly marked shared (`shared-…`), never another client's."""
    return block_name == client_id or block_name.startswith(f"{client_id}-") or block_name.startswith(SHARED_BLOCK_PREFIX)


def foreign_block_error(client_id: str, block_name: str, what: str) -> str:
    return (f"{what} names block {block_name!r}, which is not client {client_id!r}'s: a profile may use only its "
            f"own blocks (named {client_id!r} or '{client_id}-…') or shared ones (named '{SHARED_BLOCK_PREFIX}…')")
ANCHORS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")


# Nested blocks are typed as unions of the concrete block types (never the abstract bases): Prefect's
# form then offers a picker of exactly these types, and a saved document names its type by its
# `block_type_slug`, so a profile written back by the UI loads as the same blocks.
ProviderBlock = Union[LocalEngine, ReplicateProvider, FalProvider, StabilityProvider, OpenAIImagesProvider,
                      LeonardoProvider, DiffusersProvider]
TargetBlock = Union[LocalGallery, WordPressSite, StrapiSite, S3Target]
RefinerBlock = Union[ReplicateRefiner, StabilityRefiner, ReplicateProvider, StabilityProvider]
OPTIONAL_BLOCK_FIELDS = ("source", "aesthetic", "refiner", "c2pa_signer")
UNION_BLOCK_FIELDS = {"provider": ProviderBlock, "target": TargetBlock, "refiner": RefinerBlock,
                      "source": Union[LocalFileSystem, S3Bucket]}
MASK = re.compile(r"\*{8,}")


def secret_values(block: BaseModel, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, value) of every secret in a block and the blocks nested in it."""
    found: list[tuple[str, str]] = []
    for name in type(block).model_fields:
        value = getattr(block, name, None)
        path = f"{prefix}{name}"
        if isinstance(value, SecretStr):
            found.append((path, value.get_secret_value()))
        elif isinstance(value, BaseModel):
            found.extend(secret_values(value, f"{path}."))
        elif isinstance(value, dict):  # named blocks (providers)
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    found.extend(secret_values(item, f"{path}.{key}."))
    return found


def with_block_type_slugs(data: dict, references: dict) -> dict:
    """Block document data with each referenced (saved) nested block's `block_type_slug` filled in.

    The API inlines a referenced block's data without its type; blocks accept extra keys, so
    among a union of block types the first one would take any data. The reference names the type."""
    data = dict(data)
    for name, ref in (references or {}).items():
        doc = ref.get("block_document") or {}
        block_type = doc.get("block_type")
        slug = block_type.get("slug") if isinstance(block_type, dict) else getattr(block_type, "slug", None)
        if isinstance(data.get(name), dict):
            nested = with_block_type_slugs(data[name], doc.get("block_document_references") or {})
            if slug:
                nested.setdefault("block_type_slug", slug)
            data[name] = nested
    return data


def typed_block_data(v: object, union: object, what: str) -> object:
    """Nested block data without its `block_type_slug` (a saved block's data written back inline)
    gets the one block type whose fields it fits; blocks accept extra keys, so without this the
    union's first type would take anyone's data. Data that fits none, or several, is an error."""
    if not isinstance(v, dict) or not v or "block_type_slug" in v or "$ref" in v:
        return v
    members = [m for m in get_args(union) if isinstance(m, type) and issubclass(m, Block)]
    fitting = [m for m in members if set(v) <= set(m.model_fields)]
    if len(fitting) != 1:
        names = [m.get_block_type_slug() for m in (fitting or members)]
        raise ValueError(f"{what} does not say which block type it is (no block_type_slug) and its fields fit "
                         f"{'none' if not fitting else 'several'} of {names}; choose the block again in the form")
    return {**v, "block_type_slug": fitting[0].get_block_type_slug()}


def is_anonymous_name(name: str) -> bool:
    """Blocks saved inline with a profile get generated names (anonymous documents): they are its own."""
    return name.startswith("anonymous-")


def _values(v: object) -> set[str] | None:
    """A condition's accepted values (lower case), or None for a range condition."""
    if isinstance(v, dict):
        return None
    return {str(x).lower() for x in (v if isinstance(v, list) else [v])}


def _covers(field: str, wide: object, narrow: object) -> bool:
    """Whether every value condition `narrow` accepts, `wide` accepts too (conservative: False when unsure)."""
    if isinstance(wide, dict) or isinstance(narrow, dict):
        if not (isinstance(wide, dict) and isinstance(narrow, dict)):
            return False
        lo_w, hi_w = wide.get("min", float("-inf")), wide.get("max", float("inf"))
        lo_n, hi_n = narrow.get("min", float("-inf")), narrow.get("max", float("inf"))
        return lo_w <= lo_n and hi_n <= hi_w
    wide_v, narrow_v = _values(wide) or set(), _values(narrow) or set()
    if field == "locale":  # a language covers its regional locales
        return all(n in wide_v or n.split("-")[0] in wide_v for n in narrow_v)
    return narrow_v <= wide_v


def shadowed_by(earlier: RoutingRule, later: RoutingRule) -> bool:
    """Whether every asset `later` matches is matched by `earlier` first (so `later` never decides)."""
    if earlier.match != "*" and earlier.match != later.match:
        return False
    return all(f in later.when and _covers(f, c, later.when[f]) for f, c in earlier.when.items())


def rule_problem(profile: "ClientProfile", index: int, rule: RoutingRule) -> str | None:
    """What is wrong with one routing rule of `profile`, or None: an unknown recipe, provider, step, gate,
    parameter or condition field; a range on a field that is not a size; a rule an earlier one shadows; LoRAs
    or control routed to a provider that cannot take them."""
    names = [r.name for r in profile.recipes]
    if rule.recipe is not None and rule.recipe not in names:
        return f"names recipe {rule.recipe!r}; known recipes: {names}"
    unknown = sorted(set(rule.when) - set(ROUTE_FIELDS))
    if unknown:
        return f"condition on unknown field(s) {unknown}: no asset record has them; fields: {list(ROUTE_FIELDS)}"
    for field, cond in rule.when.items():
        if isinstance(cond, dict):
            if field not in ROUTE_NUMERIC or not set(cond) <= {"min", "max"} or not cond:
                return f"condition {field}: {{min, max}} ranges apply to {list(ROUTE_NUMERIC)} only"
            if not all(isinstance(x, (int, float)) for x in cond.values()):
                return f"condition {field}: min and max must be numbers"
        elif cond in (None, "", []):
            return f"condition {field} is empty"
    providers = profile.provider_names()
    if rule.target is not None and rule.target not in profile.target_names():
        return f"names target {rule.target!r}; the profile's targets: {profile.target_names()}"
    if rule.provider is not None and rule.provider != CHEAPEST and rule.provider not in providers:
        return f"names provider {rule.provider!r}; the profile's providers: {providers} (or {CHEAPEST!r})"
    if rule.params:
        bad = sorted(set(rule.params) - set(GenerationParams.model_fields))
        if bad:
            return f"params {bad} are not generation parameters; allowed: {list(GenerationParams.model_fields)}"
        try:
            GenerationParams.model_validate(rule.params)
        except ValidationError as exc:
            return f"params: {describe_validation_error(exc)}"
    for step in rule.add_steps:
        if step.step not in CHAIN_STEPS:
            return f"adds unknown step {step.step!r}; steps: {list(CHAIN_STEPS)}"
        if step.step == "encode":
            return "adds an encode step: a chain has one, set by its recipe"
    if rule.gates:
        bad = sorted(set(rule.gates) - set(GateThresholds.model_fields))
        if bad:
            return f"gates {bad} are not gate thresholds; allowed: {list(GateThresholds.model_fields)}"
        try:
            GateThresholds.model_validate({**profile.gates.model_dump(), **rule.gates})
        except ValidationError as exc:
            return f"gates: {describe_validation_error(exc)}"
    for j, earlier in enumerate(profile.routing[:index]):
        if shadowed_by(earlier, rule):
            return (f"is shadowed by rule {earlier.label(j)}: every asset it matches, that earlier rule matches "
                    "first; put it before that rule or narrow the earlier one")
    recipe = next((r for r in profile.recipes if r.name == (rule.recipe or profile.default_recipe)), None)
    loras = [*(recipe.loras if recipe else []), *rule.loras]
    control = rule.control or (recipe.control if recipe else None)
    if (why := control_model_problem(profile, control)):
        return why
    targets = providers if rule.provider == CHEAPEST else [rule.provider or "default"]
    for name in targets:
        block = profile.provider if name == "default" else profile.providers[name]
        problem = routed_extras_problem(block, loras, control)
        if problem:
            return f"routes {problem[0]} to provider {name!r} ({block.provider_name}), {problem[1]}"
    return None


def control_model_problem(profile: "ClientProfile", control) -> str | None:
    """Why `control` cannot be computed from the source with this profile's models, or None."""
    if control and control.image is None and control.kind != "edges" and not profile.control_models.get(control.kind):
        return (f"asks for {control.kind} control computed from the source, but control_models.{control.kind} names "
                f"no {control.kind} model")
    return None


def routed_extras_problem(block, loras, control) -> tuple[str, str] | None:
    """(what, why) when `block` cannot take these LoRAs or this structure control, else None."""
    if loras and not block.supports_loras:
        return "LoRAs", "which cannot apply LoRAs"
    for lora in loras:
        why = block.lora_problem(lora)
        if why:
            return f"LoRA {lora.weights!r}", f"but {why}"
    if control and not block.supports_control:
        return "structure control", "which has no ControlNet input"
    if control and (why := block.control_problem(control)):
        return f"{control.kind} control", f"but {why}"
    return None


class ClientProfile(Block):
    """One client's brand, recipes, gates, source, provider, target and budget."""

    _block_type_name = "Brandforge Client Profile"
    _block_type_slug = "brandforge-client-profile"
    _description = "Brand, recipes, quality gates, source, provider, publish target and budget of one client."

    client_id: str = Field(description="Short id used in keys, events and the ledger (letters, digits, dashes).")
    display_name: str = ""
    palette: list[str] = Field(default_factory=list, description="Brand colours as #rrggbb.")
    logo_path: str | None = Field(None, description="Logo image (PNG with alpha) used by the watermark step.")
    default_style: str = Field("", description="Style words used when a recipe names none.")
    prompt_template: str = Field(
        "{style} of {subject}, {extra}",
        description="Slots: {subject} {style} {palette} {client} {extra}.",
    )
    recipes: list[Recipe] = Field(default_factory=lambda: [Recipe(name="default")])
    routing: list[RoutingRule] = Field(
        default_factory=list, description="Ordered rule table: the first rule whose glob and conditions hold decides "
        "the recipe, provider, model, parameters, added steps, gates and template (see RoutingRule).")
    default_recipe: str = "default"
    gates: GateThresholds = Field(default_factory=GateThresholds)
    aesthetic: AestheticModel | None = Field(None, description="LAION aesthetic predictor for the aesthetic gate; null leaves the gate out.")
    source: Union[LocalFileSystem, S3Bucket, None] = Field(None, description="Where the catalog's source images live.")
    provider: ProviderBlock = Field(default_factory=LocalEngine, description="Image-to-image provider block (the default).")
    providers: dict[str, ProviderBlock] = Field(
        default_factory=dict, description="More provider blocks by name, for routing rules ('default' is `provider`).")
    prompt_templates: str | None = Field(
        None, description="Where the versioned Jinja2 prompt templates are: 'source:PATH' (a YAML/JSON file in the "
        "source storage), 'variable:NAME' (a Prefect Variable) or a local file path; unset: prompt_template.")
    template_pins: dict[str, int] = Field(default_factory=dict, description="Template name -> the version to use (unset: the latest).")
    tone: str = Field("", description="The brand's tone of voice, for templates ({{ brand.tone }}).")
    palette_words: list[str] = Field(default_factory=list, description="The palette as words for prompts; unset: nearest colour names.")
    banned_words: list[str] = Field(default_factory=list, description="Words no prompt may contain (checked after rendering).")
    timezone: str = Field("UTC", description="The client's IANA time zone: templates' time of day, season and holidays.")
    hemisphere: Literal["north", "south"] = Field("north", description="Which seasons the templates' {{ context.season }} names.")
    holidays: dict[str, str] = Field(default_factory=dict, description="'MM-DD' or 'YYYY-MM-DD' -> holiday name, over the built-in calendar.")
    control_models: dict[Literal["depth", "pose"], str] = Field(
        default_factory=dict, description="Structure control computed from the source: the depth model "
        "(AutoModelForDepthEstimation, e.g. Depth Anything) and the pose model (VitPose), each a local model folder "
        "or a Hugging Face repo id already in the local cache (nothing is downloaded at run time).")
    pass_rate_floor: float = Field(0.8, ge=0, le=1, description="Cost-aware routing: the least pass rate a cheaper provider needs.")
    pass_rate_min_samples: int = Field(3, ge=1, description="Cost-aware routing: images a provider needs on record before its pass rate counts.")
    target: TargetBlock = Field(default_factory=LocalGallery, description="Where passing images are published.")
    targets: dict[str, TargetBlock] = Field(
        default_factory=dict, description="More publish targets by name, for routing rules' `target` (e.g. 'print-s3' "
        "for channel print; 'default' is `target`).")
    # Required: a profile without its ledger must fail, never fall back to some default file (that
    # would lose the client's history and its idempotency index without a word).
    ledger: Ledger = Field(description="Audit record and idempotency index (required: the client's history lives there).")
    webhook_token: SecretStr | None = Field(
        None, description="Bearer token the webhook gateway requires on this client's asset notifications (S3, CMS)."
    )
    sns: SnsSettings | None = Field(None, description="SNS topics whose (signed) deliveries start runs; SNS sends no token.")
    strapi: StrapiTrigger | None = Field(None, description="Strapi webhook events that start runs (collections, media).")
    url_allow: list[str] = Field(
        default_factory=list,
        description="Hosts, addresses or CIDR blocks (e.g. an intranet DAM at 10.20.0.0/16) this client's sources, "
        "provider outputs and targets may be fetched from although the URL guard refuses them otherwise; for this "
        "client only, in addition to BRANDFORGE_URL_ALLOW.")
    source_handling: Literal["leave", "tag", "move"] = Field(
        "leave",
        description="What happens to a source after its image is published and recorded: leave it, tag it "
        "(S3 object tag / hidden sidecar file), or move it under archive_prefix.",
    )
    archive_prefix: str = Field("archive/", description="Where source_handling 'move' puts published sources (S3 key prefix or sub-folder).")
    refiner: RefinerBlock | None = Field(None, description="Upscale / face-restore / outpaint service the post-processing chain uses.")
    c2pa_signer: C2paSigner | None = Field(None, description="Signs C2PA manifests when a recipe's encode step sets c2pa.")
    max_assets_per_run: int | None = Field(None, ge=1)
    run_budget_usd: float | None = Field(None, ge=0, description="Most a single catalog run may spend.")
    monthly_budget_usd: float | None = Field(None, ge=0, description="Most this client may spend per calendar month.")

    @classmethod
    def model_json_schema(cls, *args, **kwargs) -> dict:
        """Prefect's schema, less one block reference the Prefect 3.8 server cannot store.

        A block type reachable along two paths of one schema (prefect-aws `S3Bucket`: the S3
        `source`, and the S3 `target`'s `bucket`) makes the server wrap its children's references
        in a list of lists and answer 500 to every read of the schema
        (`_construct_block_schema_fields_with_block_references`). The `target` → S3Target
        reference is left out of `block_schema_references` only: the form's definitions (and so
        the UI's picker), validation and loading still know S3Target, and it registers on its own."""
        schema = super().model_json_schema(*args, **kwargs)
        # Named providers sit one key deeper than Prefect's secret paths reach ("providers.api_token"): the
        # server masks (and, on a form's write-back, restores) everything under `providers` instead.
        if "secret_fields" in schema:
            kept = [f for f in schema["secret_fields"] if not f.startswith(("providers.", "targets."))]
            schema["secret_fields"] = kept + ["providers.*", "targets.*"]
        refs = schema.get("block_schema_references", {})
        for field in ("target", "targets"):
            targets = refs.get(field)
            if isinstance(targets, list):
                kept = [r for r in targets if r.get("block_type_slug") != S3Target.get_block_type_slug()]
                refs[field] = kept[0] if len(kept) == 1 else kept
        return schema

    @classmethod
    def _from_block_document(cls, block_document):
        data = with_block_type_slugs(block_document.data, block_document.block_document_references)
        return super()._from_block_document(block_document.model_copy(update={"data": data}))

    @field_validator(*OPTIONAL_BLOCK_FIELDS, mode="before")
    @classmethod
    def _empty_block_is_none(cls, v: object) -> object:
        """An optional block left empty in a form arrives as `{}`: it means none, not a block of defaults."""
        return None if v == {} else v

    @field_validator(*UNION_BLOCK_FIELDS, mode="before")
    @classmethod
    def _block_type_of_data(cls, v: object, info: ValidationInfo) -> object:
        return typed_block_data(v, UNION_BLOCK_FIELDS[info.field_name], info.field_name)

    @field_validator("providers", "targets", mode="before")
    @classmethod
    def _named_block_types(cls, v: object, info: ValidationInfo) -> object:
        union = ProviderBlock if info.field_name == "providers" else TargetBlock
        if isinstance(v, dict):
            return {k: typed_block_data(b, union, f"{info.field_name}.{k}") for k, b in v.items()}
        return v

    @model_validator(mode="after")
    def _provider_can_take_recipes(self) -> "ClientProfile":
        """A recipe with LoRAs or control on a provider that cannot take them fails here, not at generation."""
        routed = {r.recipe or self.default_recipe for r in self.routing if r.provider is None}
        for recipe in self.recipes:
            if recipe.name in routed | {self.default_recipe} or not any(r.recipe == recipe.name for r in self.routing):
                if recipe.loras and not self.provider.supports_loras:
                    raise ValueError(f"recipe {recipe.name!r} has LoRAs but the default provider ({self.provider.provider_name}) "
                                     "cannot apply LoRAs; route it to one that can (fal, replicate, diffusers)")
                if recipe.control and not self.provider.supports_control:
                    raise ValueError(f"recipe {recipe.name!r} has structure control but the default provider "
                                     f"({self.provider.provider_name}) has no ControlNet input")
                if (why := control_model_problem(self, recipe.control)):
                    raise ValueError(f"recipe {recipe.name!r} {why}")
                problem = routed_extras_problem(self.provider, recipe.loras, recipe.control)
                if problem:
                    raise ValueError(f"recipe {recipe.name!r} has {problem[0]} for the default provider "
                                     f"({self.provider.provider_name}) {problem[1]}")
        return self

    @model_validator(mode="after")
    def _no_masked_secrets(self) -> "ClientProfile":
        """A secret that reads as Prefect's mask was written back from a form that showed it masked
        (the server restores masks only for the profile's own inline blocks): refuse it by name
        rather than send '********' to a provider."""
        for path, value in secret_values(self):
            if MASK.fullmatch(value):
                raise ValueError(f"{path} holds the masked value {value!r} the Prefect UI shows for a secret, not the "
                                 "secret itself: choose the saved block again (or re-enter the secret) and save")
        return self

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", v or ""):
            raise ValueError(f"client_id must be lowercase letters, digits and dashes, 1-63 long (got {v!r})")
        return v

    @field_validator("url_allow")
    @classmethod
    def _url_allow(cls, v: list[str]) -> list[str]:
        problems = [p for p in map(allow_entry_problem, v) if p]
        if problems:
            raise ValueError(f"url_allow entries must be host names, IP addresses or CIDR blocks: {'; '.join(problems)}")
        return [e.strip() for e in v]

    @field_validator("archive_prefix")
    @classmethod
    def _archive_prefix(cls, v: str) -> str:
        parts = [p for p in v.strip("/").split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"archive_prefix must be a relative folder or key prefix such as 'archive/' (got {v!r})")
        return "/".join(parts) + "/"

    @field_validator("palette")
    @classmethod
    def _palette(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if not _HEX.match(c)]
        if bad:
            raise ValueError(f"palette colours must be #rrggbb hex (got {bad})")
        return [c.lower() for c in v]

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{{" in v or "{%" in v:  # a Jinja2 template (compiled by check_profile, rendered in the sandbox)
            if len(v) > MAX_TEMPLATE_CHARS:
                raise ValueError(f"prompt_template is {len(v)} characters; at most {MAX_TEMPLATE_CHARS}")
            return v
        try:
            slots = {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}
        except ValueError as exc:
            raise ValueError(f"prompt_template is not a valid template: {exc}") from exc
        unknown = slots - PROMPT_SLOTS
        if unknown:
            raise ValueError(f"prompt_template uses unknown slots {sorted(unknown)}; allowed: {sorted(PROMPT_SLOTS)}")
        for _, name, spec, conversion in string.Formatter().parse(v):
            if name is not None and (spec or conversion):
                raise ValueError(f"prompt_template slot {{{name}{'!' + conversion if conversion else ''}"
                                 f"{':' + spec if spec else ''}}}: format specs and conversions are not allowed; "
                                 f"write {{{name}}}")
        if len(v) > MAX_TEMPLATE_CHARS:
            raise ValueError(f"prompt_template is {len(v)} characters; at most {MAX_TEMPLATE_CHARS}")
        return v

    @model_validator(mode="after")
    def _recipes_consistent(self) -> "ClientProfile":
        names = [r.name for r in self.recipes]
        if len(set(names)) != len(names):
            raise ValueError(f"recipes must have distinct names (got {names})")
        if self.default_recipe not in names:
            raise ValueError(f"default_recipe {self.default_recipe!r} is not a recipe; known recipes: {names}")
        if "default" in self.providers:
            raise ValueError("providers may not be named 'default': that name is the profile's `provider`")
        if "default" in self.targets:
            raise ValueError("targets may not be named 'default': that name is the profile's `target`")
        for i, rule in enumerate(self.routing):
            problem = rule_problem(self, i, rule)
            if problem:
                raise ValueError(f"routing rule {rule.label(i)}: {problem}")
        return self

    def provider_names(self) -> list[str]:
        return ["default", *self.providers]

    def target_names(self) -> list[str]:
        return ["default", *self.targets]

    def _named(self, kind: str, name: str | None):
        """The `kind` ('provider' / 'target') block a route names: 'default' or unset is the profile's own."""
        if not name or name == "default":
            return getattr(self, kind)
        named = getattr(self, f"{kind}s")
        if name not in named:
            raise InvalidInput(f"{kind} {name!r} is not one of client {self.client_id}'s {kind}s {['default', *named]}")
        return named[name]

    def target_block(self, name: str | None) -> "TargetBlock":
        """The publish target a route names ('default' or unset: `target`)."""
        return self._named("target", name)

    def provider_block(self, name: str | None) -> "ProviderBlock":
        """The provider block a route names ('default' or unset: `provider`)."""
        return self._named("provider", name)

    def routed(self, provider: str | None = None, model: str | None = None, gates: dict | None = None,
               target: str | None = None) -> "ClientProfile":
        """This profile as one routed asset sees it: its provider block (with the route's model) as `provider`,
        its gate thresholds and its publish target, so the stages after planning read `profile.provider` /
        `profile.gates` / `profile.target`."""
        block = self.provider_block(provider)
        if model and model != block.model:
            block = block.model_copy(update={"model": model})
        update: dict = {"provider": block, "target": self.target_block(target)}
        if gates:
            update["gates"] = GateThresholds.model_validate({**self.gates.model_dump(), **gates})
        return self.model_copy(update=update)

    @model_serializer(mode="wrap")
    def ser_model(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):
        """Prefect saves and loads blocks with a serialization context; any other JSON rendering of a
        profile (a flow run's parameters, a log, an event) is its name only: none of its blocks'
        settings or credentials (a URL, an access key id) ever reach the API that way."""
        if info.mode == "json" and not info.context:
            return {"client_id": self.client_id, "profile_block": self._block_document_name}
        return super().ser_model(handler, info)

    def foreign_blocks(self) -> list[str]:
        """Names of saved blocks this profile embeds that belong to another client (see `owns_block`)."""
        nested = (self.source, self.provider, *self.providers.values(), self.target, *self.targets.values(), self.ledger, self.refiner, self.c2pa_signer,
                  self.aesthetic)
        names = [getattr(b, "_block_document_name", None) for b in nested if b is not None]
        return [n for n in names if n and not is_anonymous_name(n) and not owns_block(self.client_id, n)]

    def recipe(self, name: str) -> Recipe:
        for r in self.recipes:
            if r.name == name:
                return r
        raise InvalidInput(f"recipe {name!r} is not defined for client {self.client_id}; known: {[r.name for r in self.recipes]}")
