"""DiffusersProvider: self-hosted image-to-image with the diffusers library, from a local model folder.

The folder is a diffusers pipeline as written by `save_pretrained` (SD 1.5,
SDXL, InstructPix2Pix, SDXL InstructPix2Pix); its `model_index.json` says
which, or `pipeline` forces one. The contract is a union of those pipelines,
and each honours its part (reference/providers.md §6):

| field                | SD 1.5 img2img | SDXL img2img | InstructPix2Pix | SDXL InstructPix2Pix |
|----------------------|----------------|--------------|-----------------|----------------------|
| strength             | yes            | yes          | no              | no                   |
| prompt_2             | no             | yes          | no              | yes                  |
| image_guidance_scale | no             | no           | yes (≥ 1)       | yes (≥ 1)            |

width/height resize the source (img2img output follows the input), rounded to
multiples of 8. It runs in-process on CPU or GPU, synchronously: `submit`
renders (in a worker thread, one job at a time per loaded pipeline) and keeps
the PNGs for `fetch`. Needs the `diffusers` extra (diffusers, transformers, torch).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from brandforge.blocks.providers.base import CannotHonour, Unsupported, Wire, WireMap
from brandforge.blocks.providers.hosted import SynchronousProvider
from brandforge.blocks.providers.http import prepare_source
from brandforge.models import GenerationRequest, JobHandle, Rejected, Transient, stable_hash

logger = logging.getLogger("brandforge.providers")

PipelineKind = Literal["auto", "sd15", "sdxl", "instruct-pix2pix", "sdxl-instruct-pix2pix"]
_CLASS_TO_KIND = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionImg2ImgPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusionInstructPix2PixPipeline": "instruct-pix2pix",
    "StableDiffusionXLInstructPix2PixPipeline": "sdxl-instruct-pix2pix",
}
_KIND_TO_CLASS = {
    "sd15": "StableDiffusionImg2ImgPipeline",
    "sdxl": "StableDiffusionXLImg2ImgPipeline",
    "instruct-pix2pix": "StableDiffusionInstructPix2PixPipeline",
    "sdxl-instruct-pix2pix": "StableDiffusionXLInstructPix2PixPipeline",
}
_UNSUPPORTED = {
    "sd15": {"prompt_2": "SD 1.5 has one text encoder", "image_guidance_scale": "only InstructPix2Pix pipelines have it"},
    "sdxl": {"image_guidance_scale": "only InstructPix2Pix pipelines have it"},
    "instruct-pix2pix": {"strength": "InstructPix2Pix edits by instruction; it has no strength",
                         "prompt_2": "InstructPix2Pix has one text encoder"},
    "sdxl-instruct-pix2pix": {"strength": "InstructPix2Pix edits by instruction; it has no strength"},
}


def _at_least_one(value: float) -> float:
    if value < 1:
        raise CannotHonour("InstructPix2Pix needs image_guidance_scale of at least 1")
    return value


# Loaded pipelines, one per (folder, kind, device, dtype) per process, each with its lock:
# a pipeline object is not safe to call from two threads at once.
_PIPELINES: dict[tuple[str, str, str, str], tuple[Any, threading.Lock]] = {}
_LOAD_LOCK = threading.Lock()


class DiffusersProvider(SynchronousProvider):
    """Self-hosted diffusers img2img (SD 1.5 / SDXL / InstructPix2Pix) from a local model folder."""

    _block_type_name = "Brandforge Diffusers"
    _block_type_slug = "brandforge-diffusers"
    _description = "Image-to-image with a local diffusers pipeline folder (SD 1.5, SDXL, InstructPix2Pix), CPU or GPU."

    provider_name: ClassVar[str] = "diffusers"
    # In-process: nothing to share across workers, and the pipeline lock already serialises the device.
    uses_shared_limits: ClassVar[bool] = False

    model: str = Field("", description="Name recorded in the ledger (defaults to the folder name).")
    model_path: str = Field(description="A diffusers pipeline folder (save_pretrained layout).")
    pipeline: PipelineKind = Field("auto", description="Pipeline family; auto reads model_index.json.")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description="auto: float16 on CUDA, else float32.")
    price_per_image_usd: float = 0.0

    # ------------------------------------------------------------------ what it is

    def kind(self) -> str:
        if self.pipeline != "auto":
            return self.pipeline
        index = Path(self.model_path) / "model_index.json"
        try:
            name = json.loads(index.read_text())["_class_name"]
        except (OSError, ValueError, KeyError) as exc:
            raise Rejected(f"model_path {self.model_path!r} is not a diffusers pipeline folder (model_index.json: {exc})",
                           provider=self.provider_name) from exc
        if name not in _CLASS_TO_KIND:
            raise Rejected(f"pipeline {name} is not supported; use one of {', '.join(sorted(_CLASS_TO_KIND))} "
                           "or set pipeline explicitly", provider=self.provider_name)
        return _CLASS_TO_KIND[name]

    def wire_map(self) -> WireMap:
        """The pipeline's __call__ arguments, per pipeline family (the table in this module's docstring)."""
        kind = self.kind()
        ip2p = kind in ("instruct-pix2pix", "sdxl-instruct-pix2pix")
        resized = "the source is resized (img2img output follows the input), to multiples of 8"
        wire: WireMap = {
            "prompt_2": Wire("prompt_2"),
            "negative_prompt": Wire("negative_prompt"),
            "guidance_scale": Wire("guidance_scale"),
            "image_guidance_scale": Wire("image_guidance_scale", _at_least_one if ip2p else lambda v: v),
            "strength": Wire("strength"),
            "steps": Wire("num_inference_steps"),
            "batch_size": Wire("num_images_per_prompt"),
            "seed": Wire(None, how="seeds the torch generator"),
            "width": Wire(None, how=resized),
            "height": Wire(None, how=resized),
        }
        wire.update({name: Unsupported(why) for name, why in _UNSUPPORTED[kind].items()})
        return wire

    def _device_and_dtype(self) -> tuple[str, Any]:
        import torch

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.dtype
        if dtype == "auto":
            dtype = "float16" if device == "cuda" else "float32"
        return device, getattr(torch, dtype)

    def _load(self) -> tuple[Any, threading.Lock, str]:
        import diffusers

        kind = self.kind()
        device, dtype = self._device_and_dtype()
        key = (str(Path(self.model_path).resolve()), kind, device, str(dtype))
        with _LOAD_LOCK:
            if key not in _PIPELINES:
                cls = getattr(diffusers, _KIND_TO_CLASS[kind])
                kwargs: dict[str, Any] = {"local_files_only": True, "dtype": dtype}
                if kind in ("sd15", "instruct-pix2pix"):
                    kwargs.update(safety_checker=None, requires_safety_checker=False)
                try:
                    pipe = cls.from_pretrained(self.model_path, **kwargs)
                except (OSError, ValueError) as exc:
                    raise Rejected(f"cannot load {kind} pipeline from {self.model_path}: {exc}",
                                   provider=self.provider_name) from exc
                pipe = pipe.to(device)
                pipe.set_progress_bar_config(disable=True)
                _PIPELINES[key] = (pipe, threading.Lock())
            pipe, lock = _PIPELINES[key]
        return pipe, lock, device

    # ------------------------------------------------------------------ mapping

    def call_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        """The pipeline's __call__ arguments for this request (without image and generator)."""
        kw: dict[str, Any] = {"prompt": request.prompt, **self.wire_params(request)}
        strength = kw.get("strength")
        if strength is not None and request.steps * strength < 1:
            # img2img runs int(steps × strength) denoising steps; zero would be an error in diffusers.
            needed = math.ceil(1 / strength)
            logger.warning("diffusers: steps %d × strength %g < 1; running %d steps", request.steps, strength, needed)
            kw["num_inference_steps"] = needed
        return kw

    def _source(self, request: GenerationRequest):
        from PIL import Image

        if request.width or request.height:
            # Round to what the VAE accepts, then let prepare_source fit the source to it.
            w = request.width and max(64, request.width // 8 * 8)
            h = request.height and max(64, request.height // 8 * 8)
            request = request.model_copy(update={"width": w, "height": h})
        png = prepare_source(request, provider=self.provider_name, fit_to_request=True)
        img = Image.open(io.BytesIO(png)).convert("RGB")
        if img.width % 8 or img.height % 8:
            img = img.resize((max(8, img.width // 8 * 8), max(8, img.height // 8 * 8)))
        return img

    def render(self, request: GenerationRequest) -> list[bytes]:
        """Run the pipeline (blocking); PNG bytes per output."""
        import torch

        kind = self.kind()
        kwargs = self.call_kwargs(request)
        image = self._source(request)
        pipe, lock, device = self._load()
        generator = torch.Generator(device="cpu" if device == "mps" else device)
        generator.manual_seed(request.seed if request.seed is not None else 0)
        with lock:
            try:
                result = pipe(image=image, generator=generator, **kwargs)
            except torch.cuda.OutOfMemoryError as exc:  # type: ignore[attr-defined]
                torch.cuda.empty_cache()
                raise Transient(f"diffusers: out of GPU memory: {exc}", provider=self.provider_name) from exc
            except (ValueError, TypeError) as exc:
                raise Rejected(f"diffusers {kind}: {exc}", provider=self.provider_name) from exc
        out = []
        for img in result.images:
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            out.append(buf.getvalue())
        return out

    # ------------------------------------------------------------------ protocol

    async def submit(self, request: GenerationRequest) -> JobHandle:
        self.check_request(request)
        job_id = stable_hash({"model": str(Path(self.model_path).resolve()), "kind": self.kind(),
                              "request": request.model_dump()})[:24]
        if self.stored_job(job_id) is None:
            images = await asyncio.to_thread(self.render, request)
            self.store_job(job_id, images)
        return JobHandle(provider=self.provider_name, job_id=job_id, extra={"synchronous": True})
