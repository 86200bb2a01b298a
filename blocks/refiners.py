"""Refiner blocks: hosted models the post-processing chain calls for one image at a time.

A refiner is not an image-to-image generator (those are `blocks/providers/`): it
takes a finished image and returns it upscaled, with its faces restored, or
outpainted into a larger canvas through a mask. Three async methods, each
taking and returning encoded image bytes:

    upscale(image, scale)                      Real-ESRGAN and friends
    restore_faces(image, model, fidelity)      GFPGAN / CodeFormer
    outpaint(image, mask, prompt, seed)        generative fill where the mask is white

`ReplicateRefiner` speaks Replicate's predictions API (official models:
POST /v1/models/{owner}/{name}/predictions, poll `urls.get`, download the
output at once because Replicate deletes it after an hour). `StabilityRefiner`
speaks Stability's v2beta upscale and inpaint endpoints. Errors are mapped to
`RateLimited` / `Transient` (retried by the chain's step task) and `Rejected`.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any, ClassVar, Literal

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from models import RateLimited, Rejected, Transient

DATA_URI_LIMIT = 1_000_000  # Replicate recommends data URIs only below 1 MB; larger inputs go through /v1/files.


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def raise_for_status(response: httpx.Response, provider: str) -> None:
    """Map an HTTP error answer to our errors (429 → RateLimited, 5xx → Transient, other 4xx → Rejected)."""
    if response.status_code < 400:
        return
    detail = response.text[:300]
    if response.status_code == 429:
        raise RateLimited(f"{provider}: rate limited: {detail}", retry_after=_retry_after(response), provider=provider, status_code=429)
    if response.status_code >= 500 or response.status_code in (408, 409):
        raise Transient(f"{provider}: HTTP {response.status_code}: {detail}", provider=provider, status_code=response.status_code)
    raise Rejected(f"{provider}: HTTP {response.status_code}: {detail}", provider=provider, status_code=response.status_code)


def _sniff_mime(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _image_size(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size


class ImageRefiner(Block):
    """Base of refiner blocks; not registered on its own."""

    _block_type_name = "Image Refiner"
    _description = "Base of brandforge's refiner blocks (upscale, face restoration, outpainting)."

    refiner_name: ClassVar[str] = "refiner"
    # What this service can do: "upscale", "faces", "outpaint" (checked before any image is processed).
    offers: ClassVar[frozenset[str]] = frozenset()

    timeout_s: float = Field(60.0, gt=0, description="Per HTTP request.")
    deadline_s: float = Field(600.0, gt=0, description="Longest wait for one result.")

    async def upscale(self, image: bytes, scale: int = 4) -> bytes:
        raise Rejected(f"{self.refiner_name} does not offer upscaling", provider=self.refiner_name)

    async def restore_faces(self, image: bytes, model: str = "gfpgan", fidelity: float = 0.5) -> bytes:
        raise Rejected(f"{self.refiner_name} does not offer face restoration", provider=self.refiner_name)

    async def outpaint(self, image: bytes, mask: bytes, prompt: str = "", seed: int | None = None) -> bytes:
        raise Rejected(f"{self.refiner_name} does not offer outpainting", provider=self.refiner_name)


class ReplicateRefiner(ImageRefiner):
    """Upscale, restore faces and outpaint through models hosted on Replicate."""

    _block_type_name = "Brandforge Replicate Refiner"
    _block_type_slug = "brandforge-replicate-refiner"
    _description = "Runs Real-ESRGAN, GFPGAN/CodeFormer and inpainting models on Replicate for the post-processing chain."

    refiner_name: ClassVar[str] = "replicate"
    offers: ClassVar[frozenset[str]] = frozenset({"upscale", "faces", "outpaint"})

    api_token: SecretStr = Field(description="Replicate API token (r8_…).")
    base_url: str = Field("https://api.replicate.com", description="API root; tests point it at a local fake.")
    upscale_model: str = Field("nightmareai/real-esrgan", description="owner/name of the upscaler (inputs: image, scale).")
    gfpgan_model: str = Field("tencentarc/gfpgan", description="owner/name of GFPGAN (inputs: img, version, scale).")
    codeformer_model: str = Field("sczhou/codeformer", description="owner/name of CodeFormer (inputs: image, codeformer_fidelity …).")
    inpaint_model: str = Field(
        "stability-ai/stable-diffusion-inpainting", description="owner/name of an inpainting model (inputs: image, mask, prompt, seed)."
    )
    wait_s: int = Field(55, ge=0, le=60, description="Prefer: wait=N on create (0 = don't wait, just poll).")
    poll_interval_s: float = Field(1.0, gt=0, description="Longest gap between status polls.")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token.get_secret_value()}"}

    async def _image_input(self, client: httpx.AsyncClient, data: bytes) -> str:
        if len(data) < DATA_URI_LIMIT:
            return f"data:{_sniff_mime(data)};base64,{base64.b64encode(data).decode()}"
        mime = _sniff_mime(data)
        r = await client.post("/v1/files", files={"content": ("input", data, mime)})
        raise_for_status(r, self.refiner_name)
        return r.json()["urls"]["get"]

    async def run_model(self, model: str, inputs: dict[str, Any], images: dict[str, bytes]) -> bytes:
        """Run one prediction on an official model and return its (first) output file's bytes."""
        owner, _, name = model.partition("/")
        if not owner or not name:
            raise Rejected(f"model must be 'owner/name' (got {model!r})", provider=self.refiner_name)
        async with httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), timeout=self.timeout_s) as client:
            body = {"input": {**inputs, **{k: await self._image_input(client, v) for k, v in images.items()}}}
            headers = {"Prefer": f"wait={self.wait_s}"} if self.wait_s else {}
            r = await client.post(f"/v1/models/{owner}/{name}/predictions", json=body, headers=headers)
            raise_for_status(r, self.refiner_name)
            prediction = r.json()
            started, delay = time.monotonic(), 0.05
            while prediction.get("status") not in ("succeeded", "failed", "canceled"):
                if time.monotonic() - started > self.deadline_s:
                    raise Transient(f"prediction {prediction.get('id')} not finished after {self.deadline_s:.0f}s", provider=self.refiner_name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.poll_interval_s)
                r = await client.get(prediction["urls"]["get"])
                raise_for_status(r, self.refiner_name)
                prediction = r.json()
            if prediction["status"] != "succeeded":
                raise Rejected(
                    f"{model} prediction {prediction.get('id')} {prediction['status']}: {prediction.get('error')}", provider=self.refiner_name
                )
            output = prediction.get("output")
            uri = output[0] if isinstance(output, list) and output else output
            if not isinstance(uri, str) or not uri:
                raise Transient(f"{model} prediction {prediction.get('id')} returned no file (output={output!r})", provider=self.refiner_name)
            return await self._download(client, uri)

    async def _download(self, client: httpx.AsyncClient, uri: str) -> bytes:
        if uri.startswith("data:"):
            return base64.b64decode(uri.split(",", 1)[1])
        # Output URLs live on another host (replicate.delivery) and need no token: don't send it there.
        async with httpx.AsyncClient(timeout=self.timeout_s) as plain:
            r = await plain.get(uri)
        raise_for_status(r, self.refiner_name)
        return r.content

    async def upscale(self, image: bytes, scale: int = 4) -> bytes:
        return await self.run_model(self.upscale_model, {"scale": scale, "face_enhance": False}, {"image": image})

    async def restore_faces(self, image: bytes, model: str = "gfpgan", fidelity: float = 0.5) -> bytes:
        # scale/upscale 1: restoration, not enlargement; the upscale step sizes the image.
        if model == "codeformer":
            inputs = {"codeformer_fidelity": fidelity, "background_enhance": False, "face_upsample": False, "upscale": 1}
            return await self.run_model(self.codeformer_model, inputs, {"image": image})
        return await self.run_model(self.gfpgan_model, {"version": "v1.4", "scale": 1}, {"img": image})

    async def outpaint(self, image: bytes, mask: bytes, prompt: str = "", seed: int | None = None) -> bytes:
        inputs: dict[str, Any] = {"prompt": prompt or "seamless continuation of the scene"}
        if seed is not None:
            inputs["seed"] = seed
        return await self.run_model(self.inpaint_model, inputs, {"image": image, "mask": mask})


class StabilityRefiner(ImageRefiner):
    """Upscale (fast, 4×) and outpaint (inpaint with a mask) through Stability's v2beta API."""

    _block_type_name = "Brandforge Stability Refiner"
    _block_type_slug = "brandforge-stability-refiner"
    _description = "Runs Stability's v2beta upscale and inpaint endpoints for the post-processing chain."

    refiner_name: ClassVar[str] = "stability"
    offers: ClassVar[frozenset[str]] = frozenset({"upscale", "outpaint"})

    api_key: SecretStr = Field(description="Stability API key (sk-…).")
    base_url: str = Field("https://api.stability.ai", description="API root; tests point it at a local fake.")
    output_format: Literal["png", "jpeg", "webp"] = "png"

    async def _post(self, path: str, files: dict[str, tuple[str, bytes, str]], data: dict[str, Any]) -> bytes:
        headers = {"Authorization": f"Bearer {self.api_key.get_secret_value()}", "Accept": "image/*"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout_s) as client:
            r = await client.post(path, files=files, data={k: str(v) for k, v in data.items()})
            raise_for_status(r, self.refiner_name)
            if r.headers.get("finish-reason", "SUCCESS") != "SUCCESS":
                raise Rejected(f"stability: finish-reason {r.headers['finish-reason']}", provider=self.refiner_name)
            return r.content

    async def upscale(self, image: bytes, scale: int = 4) -> bytes:
        # The fast upscaler is a fixed 4×; the chain resizes to the exact target afterwards.
        w, h = _image_size(image)
        if not (32 <= min(w, h) and max(w, h) <= 1536 and w * h <= 1_048_576):
            raise Rejected(
                f"stability fast upscale takes 32-1536 px per side and at most 1,048,576 pixels (got {w}x{h}); "
                "put the upscale step before steps that enlarge, or use lanczos / realesrgan-local for large images",
                provider=self.refiner_name,
            )
        return await self._post(
            "/v2beta/stable-image/upscale/fast", {"image": ("image", image, _sniff_mime(image))}, {"output_format": self.output_format}
        )

    async def outpaint(self, image: bytes, mask: bytes, prompt: str = "", seed: int | None = None) -> bytes:
        data: dict[str, Any] = {"prompt": prompt or "seamless continuation of the scene", "output_format": self.output_format}
        if seed is not None:
            data["seed"] = seed
        files = {"image": ("image", image, _sniff_mime(image)), "mask": ("mask", mask, "image/png")}
        return await self._post("/v2beta/stable-image/edit/inpaint", files, data)
