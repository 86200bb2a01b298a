"""Pydantic models and errors shared by every room of brandforge.

This module imports nothing of ours: flows, tasks and blocks all speak in these
types. The image-to-image contract (`GenerationRequest`) validates before any
provider is called, with messages that name the field and the allowed values.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator, model_validator

# --------------------------------------------------------------------------- errors


class BrandforgeError(Exception):
    """Base of every error brandforge raises on purpose."""


class InvalidInput(BrandforgeError, ValueError):
    """A parameter, profile or recipe value is not allowed. Never retried."""


class AssetRejected(BrandforgeError):
    """A source file cannot be used (not an image, truncated, a bomb …). Never retried."""


class ProviderError(BrandforgeError):
    """Base of the errors a provider block maps its answers to."""

    retryable = False

    def __init__(self, reason: str, *, provider: str = "", status_code: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.provider = provider
        self.status_code = status_code


class RateLimited(ProviderError):
    """429 (or the provider's equivalent). Retried after `retry_after` seconds."""

    retryable = True

    def __init__(self, reason: str = "rate limited", *, retry_after: float | None = None, **kw: Any):
        super().__init__(reason, **kw)
        self.retry_after = retry_after


class Transient(ProviderError):
    """5xx, timeouts, dropped connections, malformed answers: worth another try."""

    retryable = True


class Rejected(ProviderError):
    """4xx validation, content filter, refused parameter: another try cannot help."""


class PublishError(BrandforgeError):
    """A publish target refused or failed; `retryable` says whether a retry can help
    (after `retry_after` seconds, when the target said so)."""

    def __init__(self, reason: str, *, retryable: bool = False, status_code: int | None = None,
                 retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.status_code = status_code
        self.retry_after = retry_after


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field, without pydantic's boilerplate."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        msg = err.get("msg", "").removeprefix("Value error, ")
        # Our own validators already start with the field name; pydantic's built-ins do not.
        if field and not msg.startswith(field.split(".")[-1]):
            msg = f"{field}: {msg}"
        parts.append(msg)
    return "; ".join(parts)


# --------------------------------------------------------------------------- event names (shared by every part)

ASSET_CREATED_EVENT = "brandforge.asset.created"
GENERATION_COMPLETED_EVENT = "brandforge.generation.completed"
GENERATION_FAILED_EVENT = "brandforge.generation.failed"
CATALOG_DEGRADED_EVENT = "brandforge.catalog.degraded"


# --------------------------------------------------------------------------- hashing


def content_hash(data: bytes) -> str:
    """The content address of a byte string (hex sha256)."""
    return hashlib.sha256(data).hexdigest()


def stable_hash(value: Any) -> str:
    """sha256 of the canonical JSON of `value` (sorted keys), for recipe and generation keys."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


MICRO_USD = Decimal("0.000001")
MAX_USD = Decimal("999999999999.999999")  # what the ledger's NUMERIC(18, 6) holds


def exact_usd(value: Any) -> Decimal:
    """Dollars as an exact Decimal to the micro-dollar; floats through their shortest repr
    (0.0115, never 0.01149999…). Money is never summed as binary floats."""
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except ArithmeticError as exc:
        raise ValueError(f"cost must be an amount of dollars (got {value!r})") from exc
    if not amount.is_finite() or abs(amount) > MAX_USD:
        raise ValueError(f"cost must be a finite amount of dollars, at most {MAX_USD} (got {value!r})")
    amount = amount.quantize(MICRO_USD)
    # Trailing zeros off, never an exponent: 0.0115, not 0.011500; 100, not 1E+2.
    return amount.quantize(Decimal(1)) if amount == amount.to_integral_value() else amount.normalize()


# --------------------------------------------------------------------------- the image-to-image contract

# The one range and the one default of each tunable parameter:
# name -> (default, minimum, minimum inclusive?, maximum, hint). Messages name the field and the range.
_BOUNDS: dict[str, tuple[float, float, bool, float, str]] = {
    "guidance_scale": (7.5, 0.0, False, 15.0, "how closely to follow the prompt"),
    "image_guidance_scale": (1.5, 0.0, False, 15.0, "how closely to follow the source image"),
    "strength": (0.8, 0.01, True, 1.0, "lower keeps more of the source"),
    "steps": (20, 1, True, 50, "more steps refine more and cost more"),
    "batch_size": (1, 1, True, 8, "number of variants per source"),
}
DEFAULT_NEGATIVE_PROMPT = "blurry, low quality, distorted, text, watermark"
# What an unset parameter means. Numbers follow diffusers' SD 1.5 img2img (strength 0.8: 1 = ignore
# the source); width/height 0 keep the source's size; a null seed is derived from the source.
PARAM_DEFAULTS: dict[str, Any] = {
    "prompt_2": None,
    "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
    **{name: bounds[0] for name, bounds in _BOUNDS.items()},
    "seed": None,
    "width": 0,
    "height": 0,
}
PARAM_NAMES: tuple[str, ...] = tuple(PARAM_DEFAULTS)


def asks_nothing(field: str, value: Any) -> bool:
    """Whether a parameter value asks for nothing (no text, keep the source's size): never sent, never refused."""
    return value is None or value == "" or (field in ("width", "height") and value == 0)


class GenerationParams(BaseModel):
    """The tunable parameters of an image-to-image job, each bounded once; `None` = unset.

    An unset parameter takes `PARAM_DEFAULTS` in the request, and a provider that
    cannot honour it simply leaves it out; a parameter that is set is honoured or
    refused, never silently dropped. `strength` follows diffusers (1 = ignore the
    source); each provider block converts. `Recipe` extends this model and
    `GenerationRequest` resolves it, so every path validates through these bounds.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt_2: str | None = Field(None, description="Second prompt (SDXL's second text encoder).")
    negative_prompt: str | None = Field(None, description=f"What to avoid; unset = {DEFAULT_NEGATIVE_PROMPT!r}.")
    guidance_scale: float | None = Field(None, description="How closely to follow the prompt: >0 to 15, unset = 7.5.")
    image_guidance_scale: float | None = Field(
        None, description="How closely to follow the source (InstructPix2Pix): >0 to 15, unset = 1.5."
    )
    strength: float | None = Field(None, description="Denoise strength, 0.01 to 1 (1 = ignore the source), unset = 0.8.")
    steps: int | None = Field(None, description="Denoising steps, 1 to 50, unset = 20.")
    batch_size: int | None = Field(None, description="Variants per source, 1 to 8, unset = 1.")
    seed: int | None = Field(None, description="0 to 4294967295; unset = derived from the source's content key.")
    width: int | None = Field(None, description="0 (keep the source's) or 64 to 4096.")
    height: int | None = Field(None, description="0 (keep the source's) or 64 to 4096.")

    @field_validator(*_BOUNDS, mode="before")
    @classmethod
    def _finite(cls, v: Any, info: Any) -> Any:
        # NaN compares false with every bound; name the range rather than pydantic's "finite number".
        if isinstance(v, float) and not math.isfinite(v):
            _, lo, lo_inclusive, hi, hint = _BOUNDS[info.field_name]
            low_text = f"between {lo} and {hi}" if lo_inclusive else f"greater than {lo:g} and at most {hi:g}"
            raise ValueError(f"{info.field_name} must be a number {low_text} (got {v}); {hint}")
        return v

    @field_validator(*_BOUNDS)
    @classmethod
    def _in_bounds(cls, v: float | None, info: Any) -> float | None:
        if v is None:
            return v
        name = info.field_name
        _, lo, lo_inclusive, hi, hint = _BOUNDS[name]
        if isinstance(lo, int) and isinstance(hi, int):
            if v < lo:
                raise ValueError(f"{name} must be at least {lo} (got {v}); {hint}")
            if v > hi:
                raise ValueError(f"{name} must be at most {hi} (got {v}); {hint}")
            return v
        too_low = v < lo if lo_inclusive else v <= lo
        if too_low or v > hi:
            low_text = f"between {lo} and {hi}" if lo_inclusive else f"greater than {lo:g} and at most {hi:g}"
            raise ValueError(f"{name} must be {low_text} (got {v}); {hint}")
        return v

    @field_validator("width", "height")
    @classmethod
    def _size(cls, v: int | None, info: Any) -> int | None:
        if v is not None and v != 0 and not 64 <= v <= 4096:
            raise ValueError(f"{info.field_name} must be 0 (keep the source's) or between 64 and 4096 (got {v})")
        return v

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v < 2**32:
            raise ValueError(f"seed must be between 0 and 4294967295, or null for a derived seed (got {v})")
        return v

    def set_params(self) -> dict[str, Any]:
        """The parameters this model sets (not None), by name."""
        return {name: getattr(self, name) for name in PARAM_NAMES if getattr(self, name) is not None}


class LoraSpec(BaseModel):
    """A LoRA adapter a recipe (or a CMS record) asks for: its weights and how strongly they apply."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    weights: str = Field(description="Where the weights are: an https URL, a Hugging Face repo id, or a local .safetensors file.")
    scale: float = Field(1.0, ge=0, le=4, description="How strongly the adapter applies, 0 to 4.")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str) -> str:
        if not v or not v.strip() or len(v) > 1000:
            raise ValueError("weights must name the LoRA's weights (URL, repo id or local file), 1-1000 characters")
        return v.strip()


class ControlSpec(BaseModel):
    """Structure control (ControlNet): a reference image — given, or edges / depth / pose computed from the
    source — and how strongly it conditions the generation."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["edges", "depth", "pose"] = "edges"
    scale: float = Field(0.8, ge=0, le=2, description="Conditioning scale, 0 to 2.")
    image: str | None = Field(None, description="Reference image URI; unset = computed from the source.")
    map_sha256: str | None = Field(None, description="Set by the plan when it computed the map from the source: the map's "
                                   "content hash (`image` then names the map's file; the hash, not the path, keys it).")


class GenerationRequest(GenerationParams):
    """One image-to-image job, provider-neutral, every parameter resolved.

    A parameter given as `None` (or left out) takes `PARAM_DEFAULTS`; `explicit`
    names the parameters that were asked for (by default, those given), so a
    provider can leave out an unset parameter it cannot honour and refuse a set
    one. A derived seed is not explicit: providers without seeds never see it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    source_image: str = Field(description="URI of the source image (file://, s3://, https://)")
    prompt: str
    negative_prompt: str
    guidance_scale: float = PARAM_DEFAULTS["guidance_scale"]
    image_guidance_scale: float = PARAM_DEFAULTS["image_guidance_scale"]
    strength: float = PARAM_DEFAULTS["strength"]
    steps: int = PARAM_DEFAULTS["steps"]
    batch_size: int = PARAM_DEFAULTS["batch_size"]
    width: int = PARAM_DEFAULTS["width"]
    height: int = PARAM_DEFAULTS["height"]
    explicit: tuple[str, ...] = Field(
        default=(), description="The parameters the recipe or caller set; the rest carry PARAM_DEFAULTS or a derived seed."
    )
    loras: tuple[LoraSpec, ...] = Field(default=(), description="LoRA adapters; a provider without LoRA support refuses them.")
    control: ControlSpec | None = Field(None, description="Structure control; a provider without it refuses it.")

    @model_validator(mode="before")
    @classmethod
    def _resolve_unset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = {k: v for k, v in data.items() if not (k in PARAM_NAMES and v is None and k != "negative_prompt")}
        if data.get("explicit") is None:
            given["explicit"] = tuple(k for k in PARAM_NAMES if data.get(k) is not None)
        return given

    @field_validator("explicit")
    @classmethod
    def _explicit_known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(v) - set(PARAM_NAMES))
        if unknown:
            raise ValueError(f"explicit names unknown parameters {unknown}; allowed: {list(PARAM_NAMES)}")
        return tuple(sorted(set(v), key=PARAM_NAMES.index))

    @field_validator("source_image")
    @classmethod
    def _source_present(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("source_image must not be empty; give a file://, s3:// or https:// URI")
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt_present(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("prompt must not be empty; describe the image you want")
        if len(v) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {len(v)} characters; at most {MAX_PROMPT_CHARS} (providers cut or refuse longer ones)")
        return v.strip()

    @field_validator("prompt_2", "negative_prompt")
    @classmethod
    def _prompt_length(cls, v: str | None, info) -> str | None:
        if v is not None and len(v) > MAX_PROMPT_CHARS:
            raise ValueError(f"{info.field_name} is {len(v)} characters; at most {MAX_PROMPT_CHARS}")
        return v

    def is_explicit(self, field: str) -> bool:
        """Whether `field` was asked for (not a default, not a derived seed)."""
        return field in self.explicit


class GenerationResult(BaseModel):
    """What a generation produced: local URIs of the images, and what it cost."""

    images: list[str]
    provider: str
    model: str
    job_ids: list[str] = Field(default_factory=list)
    seed: int | None = None
    cost_usd: float = 0.0
    seconds: float = 0.0
    generation_key: str | None = Field(None, description="The content address the raw images are stored under.")
    from_store: bool = Field(False, description="Taken from the generation store: no provider call, nothing paid now.")
    reported_seed: int | None = Field(None, description="The seed the provider says it used, when it differs from the requested one (fal).")
    timings: dict[str, float] = Field(default_factory=dict, description="Where the generate stage's time went: waits for "
                                      "a rate and a job slot, submit to image in hand, polls (`run_generation`).")


# --------------------------------------------------------------------------- provider protocol types


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.canceled)


class JobHandle(BaseModel):
    """What `submit` returns: enough to ask for status and results later, from any worker."""

    provider: str
    job_id: str
    status_url: str | None = None
    result_url: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class JobStatus(BaseModel):
    state: JobState
    error: str | None = None
    outputs: list[str] = Field(default_factory=list)


class JobEvent(BaseModel):
    """A verified webhook, provider-neutral: which job and how it ended."""

    provider: str
    job_id: str
    state: JobState
    outputs: list[str] = Field(default_factory=list)
    error: str | None = None
    delivery_id: str | None = None


# --------------------------------------------------------------------------- recipes and routing


class StepSpec(BaseModel):
    """One post-processing step of a recipe's chain: a step name and its parameters."""

    model_config = ConfigDict(extra="forbid")

    step: str
    params: dict[str, Any] = Field(default_factory=dict)


class Recipe(GenerationParams):
    """How to turn one source into published images for one client.

    Its generation parameters are `GenerationParams`: unset (`None`) means the
    contract's default, which a provider that cannot honour it leaves out.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    style: str = Field("", description="style words put into the prompt (e.g. 'watercolour')")
    extra_prompt: str = ""
    chain: list[StepSpec] = Field(default_factory=list)
    output_format: Literal["jpeg", "png", "webp", "avif"] = "jpeg"
    keep_composition: bool = False
    seed_policy: Literal["derived", "fixed", "random"] = Field(
        "derived", description="derived: from the source's content key (stable across reruns); fixed: the recipe's "
        "seed for every asset (a brand character); random: drawn once per asset and recorded, so a rerun asks the same.")
    loras: list[LoraSpec] = Field(default_factory=list, description="LoRA adapters (weights + scale), part of the generation key.")
    control: ControlSpec | None = Field(None, description="Structure control (edges / depth / pose), part of the generation key.")

    @model_validator(mode="after")
    def _fixed_needs_seed(self) -> "Recipe":
        if self.seed_policy == "fixed" and self.seed is None:
            raise ValueError("seed_policy 'fixed' needs the recipe's seed (0 to 4294967295)")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("name must not be empty")
        return v

    def generation_request(self, *, source_image: str, prompt: str, seed: int | None = None) -> GenerationRequest:
        """The request for this recipe, validated through `GenerationParams` again (a recipe changed with
        `model_copy` skipped validation); raises pydantic's ValidationError naming the field and the range.

        `seed` is the one to send (a derived seed, or the recipe's moved on by a regeneration); it
        counts as explicit only when the recipe sets a seed of its own."""
        params = GenerationParams.model_validate(self.model_dump(include=set(PARAM_NAMES)))
        values = params.set_params()
        explicit = tuple(values)
        if seed is not None:
            values["seed"] = seed
        values.setdefault("negative_prompt", PARAM_DEFAULTS["negative_prompt"])
        return GenerationRequest(source_image=source_image, prompt=prompt, explicit=explicit, loras=tuple(self.loras),
                                 control=self.control, **values)


# Fields added to Recipe after its key was first defined: left out of the recipe key while at their
# defaults, so existing recipes keep their keys (and their assets are not redone).
RECIPE_KEY_OPTIONAL = {"seed_policy": "derived", "loras": [], "control": None}


# Gates whose score is a number compared with one threshold: the ones a review band can apply to.
REVIEWABLE_GATES = ("sharpness", "contrast", "colour_cast", "aesthetic", "noise", "repetition", "palette", "structure")


class GateThresholds(BaseModel):
    """A client's quality floor: every gate reads its threshold from here."""

    model_config = ConfigDict(extra="forbid")

    min_width: int = Field(256, ge=1, description="Smallest acceptable output width in pixels.")
    min_height: int = Field(256, ge=1, description="Smallest acceptable output height in pixels.")
    target_aspect: float | None = Field(None, gt=0, description="Expected width/height; null accepts any.")
    aspect_tolerance: float = Field(0.03, ge=0, description="Allowed relative deviation from target_aspect.")
    min_sharpness: float = Field(30.0, ge=0, description="Variance of the Laplacian on a 512 px grey copy.")
    max_clipped_fraction: float = Field(0.2, ge=0, le=1, description="Share of pixels at pure black or white.")
    min_brightness: float = Field(35.0, ge=0, le=255)
    max_brightness: float = Field(225.0, ge=0, le=255)
    # Gates of issue 5 (tasks/gates/*). Every score is recorded; these decide pass/fail.
    min_file_bytes: int = Field(2048, ge=0, description="Smallest encoded file; tinier files are blank or truncated.")
    max_file_bytes: int = Field(20_000_000, ge=1, description="Largest encoded file a target should receive.")
    min_contrast: float = Field(4.0, ge=0, description="Std of grey levels (0-255) below which an image is blank / near-uniform.")
    max_colour_cast: float = Field(4.0, ge=0, description="Mean chroma offset / chroma spread (YCbCr); above it the whole image leans to one hue.")
    min_aesthetic: float = Field(5.0, description="LAION improved aesthetic score (about 1-10; 5.0 / 6.0 / 6.5 are usual floors); needs the profile's aesthetic model.")
    max_noise: float = Field(12.0, ge=0, description="Estimated noise sigma in grey levels (Immerkaer, full-resolution centre crop); above it the image is noisy.")
    max_band_fraction: float = Field(0.08, ge=0, le=1, description="Largest share of the image one flat stripe of identical rows or columns may cover.")
    max_alpha_hole: float = Field(0.005, ge=0, le=1, description="Largest share of transparent pixels inside an image that must be opaque.")
    max_repetition: float = Field(0.7, ge=0, le=1, description="Largest correlation of the image's detail with a shifted copy of itself (tiled or duplicated halves).")
    max_duplicate_distance: int = Field(6, ge=0, le=64, description="pHash Hamming distance (of 64 bits) at or below which an image duplicates one already published for the client.")
    max_palette_distance: float | None = Field(None, gt=0, description="Mean CIELAB delta-E from each pixel to the nearest brand colour; null records the score only.")
    min_structure: float = Field(0.3, ge=-1, le=1, description="SSIM to the source (grey, 256 px), checked for recipes with keep_composition.")
    review_band: dict[str, float] = Field(default_factory=dict, description="Gate -> half-width around its threshold, in the gate's units, where a person decides (e.g. {'aesthetic': 0.25}); empty never pauses.")
    review_timeout_s: int = Field(3600, ge=1, description="Seconds a borderline image waits for a decision in the Prefect UI.")
    review_default: Literal["approve", "reject"] = Field("reject", description="What happens to a borderline image nobody decided on in time.")

    @field_validator("review_band")
    @classmethod
    def _review_band(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(REVIEWABLE_GATES))
        if unknown:
            raise ValueError(f"review_band names unknown gates {unknown}; allowed: {list(REVIEWABLE_GATES)}")
        negative = sorted(k for k, w in v.items() if w < 0)
        if negative:
            raise ValueError(f"review_band widths must be >= 0 (negative for {negative})")
        return v


# Post-processing steps a chain may name (tasks/postprocess/chain.py STEPS plus encode; a test keeps them equal).
CHAIN_STEPS = ("watermark", "reframe", "upscale", "faces", "grade", "grain", "vignette", "soft_light", "lens_distortion", "encode")
# What routing conditions may test: the asset record's fields and the source's size. `target` is the
# record's channel (target use: print, social-9x16 …).
ROUTE_FIELDS = ("name", "category", "style", "colours", "tags", "locale", "channel", "target", "priority",
                "width", "height", "long_side")
ROUTE_NUMERIC = ("width", "height", "long_side")
CHEAPEST = "cheapest"


class RoutingRule(BaseModel):
    """One row of a client's ordered routing table: conditions → a recipe and what to change in it.

    `match` globs the source's path; `when` tests the asset record and the source (field → a value, a list
    of values, or {min, max} for sizes; list fields such as tags match when they hold a value; a language
    such as `de` matches `de-DE`). The first rule whose conditions all hold decides; none: the default recipe
    on the default provider. The rule's recipe is then changed by the rule: provider (a name in the profile's
    providers, `default`, or `cheapest` for cost-aware routing), model, generation parameters, steps added to
    the chain (before encode), gate thresholds, prompt template, LoRAs, control, seed policy and the publish target."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="How errors and `route --explain` name the rule; default: its position and match.")
    match: str = Field("*", description="Glob over the source's path in the catalog.")
    when: dict[str, Any] = Field(default_factory=dict, description=f"Conditions on {list(ROUTE_FIELDS)}.")
    recipe: str | None = Field(None, description="The recipe; unset = the profile's default recipe.")
    provider: str | None = Field(None, description=f"A name in the profile's providers, 'default', or '{CHEAPEST}'.")
    model: str | None = Field(None, description="The provider's model for these assets.")
    params: dict[str, Any] = Field(default_factory=dict, description="Generation parameter overrides (GenerationParams).")
    add_steps: list[StepSpec] = Field(default_factory=list, description="Post-processing steps added before encode.")
    gates: dict[str, Any] = Field(default_factory=dict, description="Gate threshold overrides (GateThresholds fields).")
    template: str | None = Field(None, description="Prompt template name (or name@version) for these assets.")
    style: str | None = Field(None, description="Style words replacing the recipe's.")
    loras: list[LoraSpec] = Field(default_factory=list, description="LoRAs added to the recipe's.")
    control: ControlSpec | None = None
    seed_policy: Literal["derived", "fixed", "random"] | None = None
    target: str | None = Field(None, description="Publish to this named target of the profile's `targets` (e.g. "
                               "'print-s3' for channel print); unset = the profile's `target`.")

    def label(self, index: int) -> str:
        return self.name or f"#{index + 1} ({self.match}{' ' + json.dumps(self.when, sort_keys=True) if self.when else ''})"


# --------------------------------------------------------------------------- assets and outcomes


MAX_PROMPT_CHARS = 2000
MAX_NAME_CHARS = 240


def name_problem(name: str) -> str | None:
    """Why a source name cannot be used — empty or over 240 characters, or holding NUL, control, format
    (bidi overrides such as U+202E) or line/paragraph separator characters — or None. Checked where a
    name enters (gateway, load), before anything is paid for."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        return f"names must be 1-{MAX_NAME_CHARS} characters (got {len(name) if isinstance(name, str) else 0})"
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            return f"names may not contain control, format, bidi or unassigned characters (found U+{ord(ch):04X})"
    return None


PRIORITIES = ("low", "normal", "high")


def _text_list(value: Any) -> list[str]:
    """Tags or colours as a list of short strings: from a list, or a comma/semicolon separated string."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).replace(";", ",").split(",")
    return [str(v.get("name") if isinstance(v, dict) else v).strip()[:80] for v in items if str(v).strip()][:50]


# Record keys other systems use for our fields (a CMS entry's title, a manifest's "colors" column …).
RECORD_ALIASES = {"title": "name", "product": "name", "product_name": "name", "product_title": "name",
                  "colors": "colours", "color": "colours", "colour": "colours", "target": "channel", "use": "channel",
                  "lang": "locale", "language": "locale", "seed_pin": "seed", "lora": "loras"}


class AssetRecord(BaseModel):
    """What is known about an asset beyond its bytes: product name, category, colours, tags, locale, channel
    (target use: `print`, `social-9x16` …) and priority, from a CMS entry, a sidecar JSON next to the file or a
    CSV/JSON manifest of the catalog. A CMS record may also pin a template, a seed, LoRAs and an aspect ratio;
    `context` holds values the triggering event passed for the prompt (e.g. `weather: rain`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(None, description="Product name: the prompt's subject (else the file name).")
    category: str | None = None
    style: str | None = Field(None, description="Requested style (e.g. 'photorealistic', 'illustration').")
    colours: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    locale: str | None = Field(None, description="BCP 47 tag such as 'de-DE'.")
    channel: str | None = Field(None, description="Target use: 'print', 'web', 'social-9x16' …")
    priority: Literal["low", "normal", "high"] | None = None
    template: str | None = Field(None, description="Pinned prompt template: 'name' or 'name@version'.")
    seed: int | None = Field(None, description="Pinned seed, 0 to 4294967295.")
    loras: list[LoraSpec] = Field(default_factory=list)
    aspect: str | None = Field(None, description="Pinned aspect ratio 'W:H' (e.g. '4:5').")
    context: dict[str, str] = Field(default_factory=dict, description="Values the triggering event passed (weather: rain).")
    origin: str = Field("", description="Where the record came from: sidecar, manifest, cms.")

    @field_validator("name", "category", "style", "locale", "channel", "template", mode="before")
    @classmethod
    def _short_text(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        return str(v).strip()[:200] if isinstance(v, (str, int, float)) and not isinstance(v, bool) else v

    @field_validator("colours", "tags", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> list[str]:
        return _text_list(v)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> Any:
        return v.strip().lower() or None if isinstance(v, str) else v

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_text(cls, v: Any) -> Any:
        return int(v) if isinstance(v, str) and v.strip().isdigit() else (None if v == "" else v)

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v < 2**32:
            raise ValueError(f"seed must be between 0 and 4294967295 (got {v})")
        return v

    @field_validator("aspect")
    @classmethod
    def _aspect(cls, v: str | None) -> str | None:
        if v is not None:
            w, _, h = v.partition(":")
            if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
                raise ValueError(f"aspect must be a ratio W:H such as '4:5' (got {v!r})")
        return v

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k)[:64]: str(val)[:200] for k, val in list(v.items())[:50] if val is not None}
        return v

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, origin: str = "") -> "AssetRecord":
        """A record from another system's fields (aliases mapped, unknown keys ignored); bad values raise
        InvalidInput naming the field and where the record came from."""
        known = set(cls.model_fields)
        values: dict[str, Any] = {}
        for key, value in data.items():
            field = RECORD_ALIASES.get(str(key).lower(), str(key).lower())
            if field in known and field != "origin" and field not in values and value not in (None, "", []):
                values[field] = value
        if isinstance(values.get("loras"), (dict, str)):
            values["loras"] = [values["loras"]]
        if isinstance(values.get("loras"), list):
            values["loras"] = [{"weights": lo} if isinstance(lo, str) else lo for lo in values["loras"]]
        try:
            return cls(**values, origin=origin or str(data.get("origin", "")))
        except ValidationError as exc:
            raise InvalidInput(f"asset record{f' ({origin})' if origin else ''}: {describe_validation_error(exc)}") from exc

    def merged(self, other: "AssetRecord | None") -> "AssetRecord":
        """This record with `other`'s set fields on top (a CMS entry over a manifest row)."""
        if other is None:
            return self
        return type(self).model_validate({**self.model_dump(), **other.model_dump(exclude_unset=True, exclude_defaults=True)})


class AssetRef(BaseModel):
    """A source image as found in a catalog, before it is read; `record` is what is known about it."""

    client: str
    uri: str
    name: str
    # Its schema is any object: a CMS entry (other keys included) reaches a flow run's parameters as it is
    # and is mapped onto the record's fields here, not refused by the parameter schema.
    record: Annotated[AssetRecord | None, WithJsonSchema(
        {"anyOf": [{"type": "object"}, {"type": "null"}], "default": None,
         "description": "What is known about the asset (AssetRecord fields, or a CMS entry mapped onto them)."})] = None

    @field_validator("record", mode="before")
    @classmethod
    def _record(cls, v: Any) -> Any:
        """A CMS entry arrives as a plain dict (the event's payload): mapped onto the record's fields (unless a
        subclass keeps the entry itself as its record: the gateway's StrapiAsset)."""
        if isinstance(v, dict) and AssetRecord in get_args(cls.model_fields["record"].annotation):
            return AssetRecord.from_mapping(v, origin="cms") if v else None
        return v


class LoadedAsset(BaseModel):
    """A validated, normalised source: sRGB PNG in the work folder."""

    client: str
    uri: str
    name: str
    source_key: str
    path: str
    width: int
    height: int
    original_format: str
    notes: list[str] = Field(default_factory=list)
    record: AssetRecord | None = None


class GateScore(BaseModel):
    """One gate's verdict on one candidate image."""

    gate: str
    score: float | None
    threshold: str
    passed: bool
    detail: str = ""
    limit: float | None = Field(None, description="The numeric threshold `score` was compared with (for the review band).")


class Candidate(BaseModel):
    """One finished (post-processed) variant and its gate scores."""

    index: int
    path: str
    raw_path: str
    scores: list[GateScore] = Field(default_factory=list)
    extra_outputs: dict[str, str] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.scores)


class PublishItem(BaseModel):
    """One image ready to publish, with what a target needs to describe and find it again."""

    client: str
    name: str
    generation_key: str
    output_key: str | None = Field(
        None, description="The published output's key (generation + post-processing); unset = the generation key.")
    image_path: str
    source_uri: str
    source_key: str | None = None
    source_path: str | None = None
    title: str = ""
    alt_text: str = ""
    content_type: str = "image/jpeg"
    scores: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    extra_outputs: dict[str, str] = Field(default_factory=dict)

    @property
    def publish_key(self) -> str:
        """What targets deduplicate on: one publish per output, never a second post for the same one."""
        return self.output_key or self.generation_key


class PublishReceipt(BaseModel):
    """Where a target put an image, and the ids to find it again."""

    target: str
    url: str
    remote_ids: dict[str, Any] = Field(default_factory=dict)
    already_existed: bool = False


# "review": handed by a catalog run to a review run of its own (an outcome only, never a ledger row).
FinalState = Literal["published", "quarantined", "failed", "skipped", "review"]


class AssetOutcome(BaseModel):
    """The end of one asset's run, as the catalog summary and the ledger see it."""

    client: str
    source_uri: str
    name: str
    state: FinalState
    reason: str = ""
    source_key: str | None = None
    recipe: str | None = None
    recipe_key: str | None = None
    generation_key: str | None = None
    output_key: str | None = None
    output_uris: list[str] = Field(default_factory=list)
    published_url: str | None = None
    scores: dict[str, Any] = Field(default_factory=dict)
    cost_usd: float = 0.0
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return self.state if not self.reason else f"{self.state}: {self.reason}"


# `withdrawn`: was published, then taken down because its source was unpublished or deleted.
# `replaced`: was published, then the same asset (client, source, target) was published again with
# a new recipe or new bytes; the target replaced this entry and `replaced_by` names the newer row.
LEDGER_STATES = ("published", "quarantined", "failed", "withdrawn", "replaced")


class Withdrawal(BaseModel):
    """What was done to one published image whose source was unpublished or deleted."""

    name: str
    source_uri: str
    published_url: str | None = None
    withdrawn: bool = Field(description="Taken down at the target (or already gone there) and marked in the ledger.")
    detail: str = ""


class ProviderSnapshot(BaseModel):
    """The provider block that made the pixels, as values: its type, its saved name (where its credentials
    live), its settings without secrets, the model and the parameters as they went over its wire."""

    ref: str = Field("default", description="The profile's name of the provider ('default': its `provider`).")
    name: str = Field(description="The provider's name ('local', 'fal', …).")
    block_type: str = Field(description="The block type slug, e.g. 'brandforge-fal'.")
    block_document: str | None = Field(None, description="The saved block's name, where its credentials are; None: inline.")
    model: str = ""
    settings: dict[str, Any] = Field(default_factory=dict, description="The block's fields, secrets left out.")
    wire: dict[str, Any] = Field(default_factory=dict, description="The provider-facing parameters as sent (wire names).")
    secret_fields: list[str] = Field(default_factory=list, description="Fields left out as secrets (credentials).")


class LogoSnapshot(BaseModel):
    """The logo the watermark step used: where it was and the sha256 of its bytes."""

    path: str
    sha256: str


class RecipeSnapshot(BaseModel):
    """Everything that decided a ledger row's image, as values (not hashes): enough to rebuild the image
    without the client's profile (`brandforge replay`). Recorded with every row that got as far as a request."""

    model_config = ConfigDict(extra="ignore")

    version: int = 1
    template: str | None = Field(None, description="The prompt template, name@version[/locale]; None: the profile's classic one.")
    prompt: str = Field(description="The rendered prompt.")
    caption: str | None = None
    request: GenerationRequest = Field(description="The provider-neutral request: seed, strength, LoRAs, control, sizes …")
    provider: ProviderSnapshot
    reported_seed: int | None = Field(None, description="The seed the provider reported back when it differs from the request's (fal).")
    recipe: str
    chain: list[StepSpec] = Field(default_factory=list, description="The post-processing steps with their settings.")
    encode: dict[str, Any] = Field(default_factory=dict, description="The encode settings, defaults resolved.")
    output_format: str = "jpeg"
    palette: list[str] = Field(default_factory=list)
    logo: LogoSnapshot | None = None
    refiner: str | None = Field(None, description="The refiner block ('slug/name') a chain step may call.")
    c2pa_signer: str | None = Field(None, description="The C2PA signer block ('slug/name') encode may call.")
    target: str | None = Field(None, description="The publish target: its name and block type.")
    target_settings: dict[str, Any] = Field(default_factory=dict, description="The target block's settings, secrets left out.")
    generation_store: str | None = Field(None, description="The generation store's folder the raw images were kept in.")


class LedgerEntry(BaseModel):
    """One row of the ledger: the audit record of one asset × recipe attempt."""

    # Stages fill a row field by field: each assignment is validated (a float cost becomes exact dollars).
    model_config = ConfigDict(validate_assignment=True)

    client: str
    source_uri: str
    source_key: str | None = None
    recipe: str | None = None
    recipe_key: str | None = None
    generation_key: str | None = None
    output_key: str | None = None
    provider: str | None = None
    model: str | None = None
    job_ids: list[str] = Field(default_factory=list)
    output_uris: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    scores: dict[str, Any] = Field(default_factory=dict)
    cost_usd: Decimal = Decimal(0)
    timings: dict[str, float] = Field(default_factory=dict)
    state: str
    reason: str = ""
    target: str | None = None
    target_key: str | None = None
    remote_ids: dict[str, Any] = Field(default_factory=dict)
    published_url: str | None = None
    phash: str | None = None
    flow_run_id: str | None = None
    recipe_snapshot: RecipeSnapshot | None = Field(None, description="Everything that decided the image, as values (replay).")
    replaced_by: int | None = Field(None, description="State `replaced`: the ledger row of the publish that replaced this one.")
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @field_validator("cost_usd", mode="before")
    @classmethod
    def _exact_cost(cls, v: Any) -> Decimal:
        return exact_usd(v)

    @field_validator("seed")
    @classmethod
    def _seed_64bit(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v < 2**63:
            raise ValueError(f"seed must be between 0 and 2**63-1 (got {v})")
        return v

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        """Every ledger time is an instant: naive means UTC."""
        return v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v

    @model_validator(mode="after")
    def _state_known(self) -> "LedgerEntry":
        if self.state not in LEDGER_STATES:
            raise ValueError(f"state must be one of {', '.join(LEDGER_STATES)} (got {self.state!r})")
        return self


class AssetPlan(BaseModel):
    """The route and prompt stages' answer for one loaded asset.

    Either the final decision already taken for these source bytes and this recipe
    (`done`: nothing to redo), or the request to generate and its keys: the generation
    key (what decides the provider's pixels; the generation store's address) and the
    output key (that generation through this recipe's post-processing and gates; what
    targets and the ledger deduplicate publishes on)."""

    recipe: Recipe
    recipe_key: str
    provider: str
    model: str | None = None
    done: LedgerEntry | None = None
    request: GenerationRequest | None = None
    generation_key: str | None = None
    output_key: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="The parameters as the ledger and the outputs record them.")
    provider_ref: str = Field("default", description="The profile's name of the routed provider block ('default': `provider`).")
    target_ref: str = Field("default", description="The profile's name of the routed publish target ('default': `target`).")
    rule: str | None = Field(None, description="The routing rule that decided; None = the default route.")
    template: str | None = Field(None, description="The prompt template (name@version[/locale]) that wrote the prompt.")
    gates: dict[str, Any] = Field(default_factory=dict, description="The route's gate threshold overrides.")
    caption: str | None = Field(None, description="The template's caption (alt text) in the asset's language.")
    snapshot: RecipeSnapshot | None = Field(None, description="What decides the image, as values, for the ledger row.")


class CatalogSummary(BaseModel):
    """What one catalog run did, for the terminal, artifacts and tests."""

    client: str
    counts: dict[str, int]
    outcomes: list[AssetOutcome]
    seconds: float
    cost_usd: float
    gallery: str | None = None

    @property
    def total(self) -> int:
        return len(self.outcomes)
