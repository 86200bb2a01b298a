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
from typing import Literal, Union

from prefect.blocks.core import Block
from prefect.filesystems import LocalFileSystem
from prefect_aws import S3Bucket
from pydantic import Field, SecretStr, SerializationInfo, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from blocks.aesthetic import AestheticModel
from blocks.c2pa_signer import C2paSigner
from blocks.ledger import Ledger
from blocks.providers.base import ImageProvider
from blocks.providers.local_engine import LocalEngine
from blocks.refiners import ImageRefiner
from blocks.targets.base import PublishTarget
from blocks.targets.gallery import LocalGallery
from blocks.triggers import SnsSettings, StrapiTrigger
from models import GateThresholds, InvalidInput, Recipe, RoutingRule

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
    provider: ImageProvider = Field(default_factory=LocalEngine, description="Image-to-image provider block.")
    target: PublishTarget = Field(default_factory=LocalGallery, description="Where passing images are published.")
    ledger: Ledger = Field(default_factory=Ledger, description="Audit record and idempotency index.")
    webhook_token: SecretStr | None = Field(
        None, description="Bearer token the webhook gateway requires on this client's asset notifications (S3, CMS)."
    )
    sns: SnsSettings | None = Field(None, description="SNS topics whose (signed) deliveries start runs; SNS sends no token.")
    strapi: StrapiTrigger | None = Field(None, description="Strapi webhook events that start runs (collections, media).")
    source_handling: Literal["leave", "tag", "move"] = Field(
        "leave",
        description="What happens to a source after its image is published and recorded: leave it, tag it "
        "(S3 object tag / hidden sidecar file), or move it under archive_prefix.",
    )
    archive_prefix: str = Field("archive/", description="Where source_handling 'move' puts published sources (S3 key prefix or sub-folder).")
    refiner: ImageRefiner | None = Field(None, description="Upscale / face-restore / outpaint service the post-processing chain uses.")
    c2pa_signer: C2paSigner | None = Field(None, description="Signs C2PA manifests when a recipe's encode step sets c2pa.")
    max_assets_per_run: int | None = Field(None, ge=1)
    run_budget_usd: float | None = Field(None, ge=0, description="Most a single catalog run may spend.")
    monthly_budget_usd: float | None = Field(None, ge=0, description="Most this client may spend per calendar month.")

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", v or ""):
            raise ValueError(f"client_id must be lowercase letters, digits and dashes, 1-63 long (got {v!r})")
        return v

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
