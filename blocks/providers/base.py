"""The provider block protocol every image-to-image backend implements.

A provider is a Prefect block (so its secrets and settings live server-side and
show in the UI) with four async methods:

    submit(request) -> JobHandle        start a job, never wait for pixels
    status(handle)  -> JobStatus        where the job is
    fetch(handle)   -> list[bytes]      the finished images, downloaded now
    verify_webhook(headers, body) -> JobEvent   check a callback's signature

plus the limits the generation task honours (requests per minute, concurrent
jobs) and the price per image that goes into the ledger. Errors are mapped to
`RateLimited`, `Transient` (both retried) and `Rejected` (never retried).

What a provider can honour is declared once, in its `wire_map()`: for every
parameter of `GenerationParams`, its wire name and converter (`Wire`) or why it
is not supported (`Unsupported`). `wire_params(request)` applies the map before
any call: a parameter the recipe set that the provider cannot honour is a
`Rejected` naming the field and the reason; a parameter left unset is simply
not sent there (and carries the contract's default where it is supported).
"""

from __future__ import annotations

from abc import ABC

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from brandforge.models import (PARAM_NAMES, ControlSpec, GenerationRequest, JobEvent, JobHandle, JobStatus, LoraSpec, Rejected,
                               asks_nothing)


class CannotHonour(ValueError):
    """Raised by a `Wire` converter for a value the provider cannot take (the message says what it takes)."""


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Wire:
    """A parameter the provider honours: sent as `name`, converted by `convert` (which may raise
    `CannotHonour`). `name` None: honoured by the block's own code, as `how` says (folded into the
    prompt, the source resized, …), with `convert` still checking the value."""

    name: str | None
    convert: Callable[[Any], Any] = _same
    how: str = ""


@dataclass(frozen=True)
class Unsupported:
    """A parameter the provider has no way to honour, and why."""

    reason: str


WireMap = dict[str, "Wire | Unsupported"]


def at_most(limit: int | float, why: str) -> Callable[[Any], Any]:
    """A converter that passes values up to `limit` and refuses larger ones with `why`."""
    def convert(value: Any) -> Any:
        if value > limit:
            raise CannotHonour(f"at most {limit:g}: {why}")
        return value
    return convert


def within(lo: float, hi: float, why: str, convert: Callable[[Any], Any] = _same) -> Callable[[Any], Any]:
    """A converter that converts, then refuses a wire value outside lo–hi with `why`."""
    def check(value: Any) -> Any:
        wire = convert(value)
        if not lo <= wire <= hi:
            raise CannotHonour(f"{why} (would send {wire:g})")
        return wire
    return check


class ImageProvider(Block, ABC):
    """Base class of provider blocks; not registered on its own."""

    _block_type_name = "Image Provider"
    _description = "Base of brandforge's image-to-image provider blocks."

    # Whether the provider calls back when a job ends (the generation task then also
    # listens for the relayed `brandforge.generation.*` event instead of only polling).
    supports_webhooks: ClassVar[bool] = False
    # Whether the generation task takes Prefect global rate/concurrency slots for it
    # (hosted APIs yes; the in-process local engine has nothing to protect).
    uses_shared_limits: ClassVar[bool] = False
    # Whether `find_job` can look a submitted job up at the provider (else a lost answer stays unknown).
    lists_jobs: ClassVar[bool] = False

    provider_name: ClassVar[str] = "provider"
    # Whether the provider passes LoRA adapters / structure control on (a profile routing them to one that
    # cannot is refused when it is built; a request carrying them is refused before any call).
    supports_loras: ClassVar[bool] = False
    supports_control: ClassVar[bool] = False

    model: str = Field("", description="The provider's model id or version.")
    requests_per_minute: int = Field(600, ge=1, description="Shared submit budget across all workers.")
    max_concurrent_jobs: int = Field(8, ge=1, description="Jobs in flight at once across all workers.")
    price_per_image_usd: float = Field(0.0, ge=0, description="Recorded in the ledger and counted against budgets.")

    @property
    def limit_name(self) -> str:
        """Name of the Prefect global concurrency / rate limits this provider uses."""
        return f"brandforge-provider-{self.provider_name}"

    @property
    def rate_limit_name(self) -> str:
        """Prefect global rate limit (slot decay = requests_per_minute / 60) for job-creating calls."""
        return f"{self.limit_name}-rpm"

    @property
    def concurrency_limit_name(self) -> str:
        """Prefect global concurrency limit (max_concurrent_jobs) held while a job is in flight."""
        return f"{self.limit_name}-jobs"

    def job_resource_id(self, job_id: str) -> str:
        """Resource id of the `brandforge.generation.*` events about one job."""
        return f"brandforge.job.{self.provider_name}.{job_id}"

    def wire_map(self) -> WireMap:
        """Parameter -> `Wire` or `Unsupported`, for every name in `PARAM_NAMES` (may depend on settings)."""
        raise NotImplementedError

    def lora_problem(self, lora: LoraSpec) -> str | None:
        """Why this block cannot apply `lora`, or None. Asked when a profile is saved (naming the rule or recipe)
        and before any call; a block that takes LoRAs refines it for the references it can load."""
        return None if self.supports_loras else f"{self.provider_name} cannot apply LoRAs"

    def control_problem(self, control: ControlSpec) -> str | None:
        """Why this block cannot take `control`, or None (asked where `lora_problem` is)."""
        return None if self.supports_control else f"{self.provider_name} has no ControlNet input"

    def wire_params(self, request: GenerationRequest) -> dict[str, Any]:
        """{wire name: value} for this request; `Rejected` (before any call) naming every parameter the
        request set explicitly that this provider cannot honour. Unset ones it cannot honour are left out."""
        wire_map = self.wire_map()
        missing = [name for name in PARAM_NAMES if name not in wire_map]
        if missing:
            raise NotImplementedError(f"{type(self).__name__}.wire_map() does not declare {missing}")
        sent: dict[str, Any] = {}
        refused: list[str] = []
        for name in PARAM_NAMES:
            spec, value = wire_map[name], getattr(request, name)
            if asks_nothing(name, value):
                continue
            if isinstance(spec, Unsupported):
                if request.is_explicit(name):
                    refused.append(f"{name} is not supported by {self.provider_name} ({spec.reason})")
                continue
            try:
                converted = spec.convert(value)
            except CannotHonour as exc:
                if request.is_explicit(name):
                    refused.append(f"{name}={value!r} cannot be honoured by {self.provider_name}: {exc}")
                continue
            if spec.name is not None:
                sent[spec.name] = converted
        if request.loras and not self.supports_loras:
            refused.append(f"loras are not supported by {self.provider_name} (it cannot apply LoRA adapters)")
        elif request.loras:
            refused += [f"loras: {why}" for why in map(self.lora_problem, request.loras) if why]
        if request.control and not self.supports_control:
            refused.append(f"control is not supported by {self.provider_name} (it has no ControlNet input)")
        elif request.control and (why := self.control_problem(request.control)):
            refused.append(f"control: {why}")
        if refused:
            raise Rejected("; ".join(refused) + "; leave it unset in the recipe or choose a provider that has it",
                           provider=self.provider_name)
        return sent

    def check_request(self, request: GenerationRequest) -> None:
        """Refuse, before any call (and before any rate-limit slot), what this provider cannot honour."""
        self.wire_params(request)

    async def submit(self, request: GenerationRequest) -> JobHandle:
        raise NotImplementedError

    async def find_job(self, request: GenerationRequest, since: datetime,
                       exclude: frozenset[str] = frozenset()) -> JobHandle | None:
        """A job for exactly this request that the provider accepted since `since` (ids in `exclude`
        aside), or None: after a submission whose answer never came back (a timeout, a process killed
        before it wrote the job id down), the job may exist and be billed; a provider that can list
        its jobs (`lists_jobs`) finds it here, and the caller resumes it instead of paying again."""
        return None

    async def status(self, handle: JobHandle) -> JobStatus:
        raise NotImplementedError

    async def fetch(self, handle: JobHandle) -> list[bytes]:
        raise NotImplementedError

    def verify_webhook(self, headers: dict[str, str], body: bytes) -> JobEvent:
        raise Rejected(f"{self.provider_name} does not send webhooks", provider=self.provider_name)


class ImageRefiner(Block, ABC):
    """The refine capability: upscale, restore faces or outpaint one finished image (encoded bytes in
    and out). Provider blocks that serve it (Replicate, Stability) inherit it, so one block, one token
    and one HTTP path do both generation and refining; not registered on its own."""

    _block_type_name = "Image Refiner"
    _description = "Base of brandforge's refiner blocks (upscale, face restoration, outpainting)."

    refiner_name: ClassVar[str] = "refiner"
    # What this service can do: "upscale", "faces", "outpaint" (checked before any image is processed).
    offers: ClassVar[frozenset[str]] = frozenset()

    async def upscale(self, image: bytes, scale: int = 4) -> bytes:
        raise Rejected(f"{self.refiner_name} does not offer upscaling", provider=self.refiner_name)

    async def restore_faces(self, image: bytes, model: str = "gfpgan", fidelity: float = 0.5) -> bytes:
        raise Rejected(f"{self.refiner_name} does not offer face restoration", provider=self.refiner_name)

    async def outpaint(self, image: bytes, mask: bytes, prompt: str = "", seed: int | None = None) -> bytes:
        raise Rejected(f"{self.refiner_name} does not offer outpainting", provider=self.refiner_name)


def sniff_mime(data: bytes) -> str:
    """The MIME type of encoded image bytes, from their magic number."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def renamed_fields(data: Any, renames: dict[str, str]) -> Any:
    """Saved blocks of an older shape: their field names mapped onto today's (a `mode="before"` helper)."""
    if isinstance(data, dict):
        data = dict(data)
        for old, new in renames.items():
            if old in data and new not in data:
                data[new] = data.pop(old)
    return data
