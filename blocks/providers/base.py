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
"""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from models import GenerationRequest, JobEvent, JobHandle, JobStatus, Rejected


class ImageProvider(Block):
    """Base class of provider blocks; not registered on its own."""

    _block_type_name = "Image Provider"
    _description = "Base of brandforge's image-to-image provider blocks."

    # What a provider can honour; `check_supported` refuses the rest clearly.
    supports_negative_prompt: ClassVar[bool] = True
    supports_seed: ClassVar[bool] = True
    supports_prompt_2: ClassVar[bool] = False
    supports_image_guidance: ClassVar[bool] = False
    max_batch_size: ClassVar[int] = 8
    # Whether the provider calls back when a job ends (the generation task then also
    # listens for the relayed `brandforge.generation.*` event instead of only polling).
    supports_webhooks: ClassVar[bool] = False
    # Whether the generation task takes Prefect global rate/concurrency slots for it
    # (hosted APIs yes; the in-process local engine has nothing to protect).
    uses_shared_limits: ClassVar[bool] = False

    provider_name: ClassVar[str] = "provider"

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

    def check_supported(self, request: GenerationRequest) -> None:
        """Refuse, before any call, what this provider cannot honour."""
        if request.batch_size > self.max_batch_size:
            raise Rejected(
                f"batch_size must be at most {self.max_batch_size} for {self.provider_name} (got {request.batch_size})",
                provider=self.provider_name,
            )

    async def submit(self, request: GenerationRequest) -> JobHandle:
        raise NotImplementedError

    async def status(self, handle: JobHandle) -> JobStatus:
        raise NotImplementedError

    async def fetch(self, handle: JobHandle) -> list[bytes]:
        raise NotImplementedError

    def verify_webhook(self, headers: dict[str, str], body: bytes) -> JobEvent:
        raise Rejected(f"{self.provider_name} does not send webhooks", provider=self.provider_name)
