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
multiples of 8. LoRAs are local `.safetensors` files (never downloaded here), loaded
with diffusers' `load_lora_weights` (the peft backend) as named adapters kept per
pipeline and file content, then enabled with their scales for one request and
disabled for the next request without them: the base weights are never fused or
changed, so a plain request after a LoRA one gives the same bytes as a fresh
pipeline. It runs in-process on CPU or GPU, synchronously: `submit` renders (in
a worker thread, one job at a time per loaded pipeline) and keeps the PNGs for
`fetch`. Needs the `diffusers` extra (diffusers, transformers, torch).
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
from brandforge.models import GenerationRequest, JobHandle, LoraSpec, Rejected, Transient, content_hash, stable_hash

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
# LoRA adapters loaded into each pipeline (by id), most recently used last; at most MAX_LOADED_LORAS
# stay loaded per pipeline (the least recently used is deleted first).
_ADAPTERS: dict[int, list[str]] = {}
MAX_LOADED_LORAS = 8


def lora_file(weights: str) -> Path:
    """The local file a LoRA reference names (a path or file:// URI)."""
    return Path(weights.removeprefix("file://")).expanduser()


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def lora_fingerprint(path: Path) -> str:
    """An adapter name for the file's content (a changed file is a new adapter, never a stale one); hashed
    once per (path, size, mtime): LoRA files run to hundreds of MB."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FINGERPRINTS:
            _FINGERPRINTS[key] = "lora_" + content_hash(path.read_bytes())[:16]
    except OSError as exc:
        raise Rejected(f"loras: cannot read LoRA file {str(path)!r}: {exc}", provider="diffusers") from exc
    return _FINGERPRINTS[key]


class DiffusersProvider(SynchronousProvider):
    """Self-hosted diffusers img2img (SD 1.5 / SDXL / InstructPix2Pix) from a local model folder."""

    _block_type_name = "Brandforge Diffusers"
    _block_type_slug = "brandforge-diffusers"
    _description = "Image-to-image with a local diffusers pipeline folder (SD 1.5, SDXL, InstructPix2Pix), CPU or GPU."

    provider_name: ClassVar[str] = "diffusers"
    supports_loras: ClassVar[bool] = True
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

    def lora_problem(self, lora: LoraSpec) -> str | None:
        if lora.weights.startswith(("http://", "https://")) or not lora.weights.endswith(".safetensors"):
            return ("diffusers loads local LoRA files only: give a path to a .safetensors file "
                    f"(got {lora.weights!r}; nothing is downloaded at run time)")
        return None

    def _set_loras(self, pipe: Any, loras: tuple[LoraSpec, ...]) -> None:
        """Enable exactly these adapters with their scales (loading the missing ones), or disable all.
        Called under the pipeline's lock, just before it runs."""
        loaded = _ADAPTERS.setdefault(id(pipe), [])
        if not loras:
            if loaded:
                pipe.disable_lora()
            return
        scales: dict[str, float] = {}
        for lora in loras:
            name = lora_fingerprint(lora_file(lora.weights))
            scales[name] = scales.get(name, 0.0) + lora.scale  # the same file twice: one adapter, scales summed
            if name in loaded:
                loaded.remove(name)
            else:
                try:
                    pipe.load_lora_weights(str(lora_file(lora.weights)), adapter_name=name)
                except (OSError, ValueError, KeyError, RuntimeError) as exc:
                    if name in (pipe.get_list_adapters() or {}).get("unet", []):
                        pipe.delete_adapters([name])
                    raise Rejected(f"loras: {lora.weights!r} does not load into this {self.kind()} pipeline: {exc}",
                                   provider=self.provider_name) from exc
            loaded.append(name)
        stale = [n for n in loaded[:-MAX_LOADED_LORAS] if n not in scales]
        if stale:
            pipe.delete_adapters(stale)
            loaded[:] = [n for n in loaded if n not in stale]
        pipe.enable_lora()
        pipe.set_adapters(list(scales), adapter_weights=list(scales.values()))

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
            self._set_loras(pipe, request.loras)
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
        # The LoRA files' content, not only their paths: a retrained file at the same path is a new job.
        adapters = [lora_fingerprint(lora_file(lo.weights)) for lo in request.loras]
        job_id = stable_hash({"model": str(Path(self.model_path).resolve()), "kind": self.kind(),
                              "request": request.model_dump(), **({"adapters": adapters} if adapters else {})})[:24]
        if self.stored_job(job_id) is None:
            images = await asyncio.to_thread(self.render, request)
            self.store_job(job_id, images)
        return JobHandle(provider=self.provider_name, job_id=job_id, extra={"synchronous": True})
