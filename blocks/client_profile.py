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
from brandforge.models import GateThresholds, InvalidInput, Recipe, RoutingRule

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


def is_anonymous_name(name: str) -> bool:
    """Blocks saved inline with a profile get generated names (anonymous documents): they are its own."""
    return name.startswith("anonymous-")


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
    routing: list[RoutingRule] = Field(default_factory=list, description="First matching glob wins.")
    default_recipe: str = "default"
    gates: GateThresholds = Field(default_factory=GateThresholds)
    aesthetic: AestheticModel | None = Field(None, description="LAION aesthetic predictor for the aesthetic gate; null leaves the gate out.")
    source: Union[LocalFileSystem, S3Bucket, None] = Field(None, description="Where the catalog's source images live.")
    provider: ProviderBlock = Field(default_factory=LocalEngine, description="Image-to-image provider block.")
    target: TargetBlock = Field(default_factory=LocalGallery, description="Where passing images are published.")
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
        refs = schema.get("block_schema_references", {})
        targets = refs.get("target")
        if isinstance(targets, list):
            kept = [r for r in targets if r.get("block_type_slug") != S3Target.get_block_type_slug()]
            refs["target"] = kept[0] if len(kept) == 1 else kept
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
        """Nested block data without its `block_type_slug` (a saved block's data written back inline)
        gets the one block type whose fields it fits; blocks accept extra keys, so without this the
        union's first type would take anyone's data. Data that fits none, or several, is an error."""
        if not isinstance(v, dict) or not v or "block_type_slug" in v or "$ref" in v:
            return v
        members = [m for m in get_args(UNION_BLOCK_FIELDS[info.field_name]) if isinstance(m, type) and issubclass(m, Block)]
        fitting = [m for m in members if set(v) <= set(m.model_fields)]
        if len(fitting) != 1:
            names = [m.get_block_type_slug() for m in (fitting or members)]
            raise ValueError(f"{info.field_name} does not say which block type it is (no block_type_slug) and its fields fit "
                             f"{'none' if not fitting else 'several'} of {names}; choose the block again in the form")
        return {**v, "block_type_slug": fitting[0].get_block_type_slug()}

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
        for rule in self.routing:
            if rule.recipe not in names:
                raise ValueError(f"routing rule {rule.match!r} names recipe {rule.recipe!r}; known recipes: {names}")
        if self.default_recipe not in names:
            raise ValueError(f"default_recipe {self.default_recipe!r} is not a recipe; known recipes: {names}")
        return self

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
        nested = (self.source, self.provider, self.target, self.ledger, self.refiner, self.c2pa_signer, self.aesthetic)
        names = [getattr(b, "_block_document_name", None) for b in nested if b is not None]
        return [n for n in names if n and not is_anonymous_name(n) and not owns_block(self.client_id, n)]

    def recipe(self, name: str) -> Recipe:
        for r in self.recipes:
            if r.name == name:
                return r
        raise InvalidInput(f"recipe {name!r} is not defined for client {self.client_id}; known: {[r.name for r in self.recipes]}")
