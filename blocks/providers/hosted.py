"""HostedProvider: what every provider reached over HTTP has in common.

Settings (base URL, the API key as one `SecretStr`, timeouts, the gateway URL
webhooks are sent to) and a small job folder for synchronous providers
(Stability, OpenAI), whose answer *is* the image: it is written to disk at once
so `fetch` works from any retry of the task. What each provider honours is its
`wire_map()` (blocks/providers/base.py).
"""

from __future__ import annotations

from abc import ABC

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr

from brandforge.blocks.providers.base import ImageProvider
from brandforge.models import JobHandle, JobState, JobStatus, Transient


class HostedProvider(ImageProvider, ABC):
    """Base of provider blocks that talk to an HTTP API; not registered on its own."""

    _block_type_name = "Hosted Image Provider"

    uses_shared_limits: ClassVar[bool] = True
    base_url: str = Field("", description="API root; the provider's public one unless you proxy it.")
    api_key: SecretStr = Field(SecretStr(""), description="API token (kept secret; never logged).")
    request_timeout_s: float = Field(60.0, gt=0, description="Longest wait for one HTTP answer.")
    webhook_url: str | None = Field(
        None, description="Public URL of the brandforge webhook gateway for this block; null = poll only."
    )
    job_dir: str = Field(".brandforge/provider-jobs", description="Where synchronous answers are kept until fetched.")
    limit_group: str = Field(
        "", pattern=r"^[a-z0-9-]*$",
        description="Budget name: blocks of the same provider and group share one rate limit and one concurrency "
        "cap (use one group per API account). Empty = one budget per provider.",
    )

    @property
    def limit_name(self) -> str:
        base = f"brandforge-provider-{self.provider_name}"
        return f"{base}-{self.limit_group}" if self.limit_group else base

    def token(self) -> str:
        return self.api_key.get_secret_value()

    # ------------------------------------------------------------------ sync-provider job folder

    def _job_folder(self, job_id: str) -> Path:
        return Path(self.job_dir) / self.provider_name / job_id

    def store_job(self, job_id: str, images: list[bytes]) -> None:
        folder = self._job_folder(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(images):
            (folder / f"{i}.bin").write_bytes(data)
        (folder / "done").write_text(str(len(images)))

    def stored_job(self, job_id: str) -> list[bytes] | None:
        folder = self._job_folder(job_id)
        if not (folder / "done").exists():
            return None
        count = int((folder / "done").read_text())
        return [(folder / f"{i}.bin").read_bytes() for i in range(count)]

    async def stored_status(self, handle: JobHandle) -> JobStatus:
        """`status` of a synchronous provider: its answer was stored at submit time."""
        if self.stored_job(handle.job_id) is None:
            return JobStatus(state=JobState.failed, error=f"no stored answer for job {handle.job_id}")
        return JobStatus(state=JobState.succeeded)

    async def stored_fetch(self, handle: JobHandle) -> list[bytes]:
        """`fetch` of a synchronous provider: the images stored at submit time."""
        stored = self.stored_job(handle.job_id)
        if stored is None:
            raise Transient(f"no stored answer for job {handle.job_id}", provider=self.provider_name)
        return stored


class SynchronousProvider(HostedProvider, ABC):
    """A provider whose answer to `submit` is the images (Stability, OpenAI, in-process diffusers):
    `submit` stores them, `status` and `fetch` read them back; not registered on its own."""

    _block_type_name = "Synchronous Image Provider"

    async def status(self, handle: JobHandle) -> JobStatus:
        return await self.stored_status(handle)

    async def fetch(self, handle: JobHandle) -> list[bytes]:
        return await self.stored_fetch(handle)
