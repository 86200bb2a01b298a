"""The post-processing chain: a recipe's steps, validated up front, run in order.

The chain is data (`Recipe.chain`, a list of `StepSpec`). Every step name maps
to a parameter model and a pure image function; `validate_chain` checks the
whole list before any image is processed, and `postprocess_candidate` runs it
on one generated image and encodes the result with its provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from PIL import Image
from prefect import task
from pydantic import BaseModel, ValidationError

from models import InvalidInput, StepSpec, describe_validation_error
from tasks.postprocess.encode import EncodeParams, encode_image
from tasks.postprocess.watermark import WatermarkParams, apply_watermark


@dataclass(frozen=True)
class ChainContext:
    """What steps may need beyond the image and their own parameters."""

    seed: int
    palette: tuple[str, ...] = ()
    logo_path: str | None = None
    source_path: str | None = None
    output_format: str = "jpeg"
    metadata: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=8)
def _load_logo(path: str) -> Image.Image:
    with Image.open(path) as logo:
        return logo.convert("RGBA")


def _watermark(image: Image.Image, p: WatermarkParams, ctx: ChainContext) -> Image.Image:
    if not ctx.logo_path:
        raise InvalidInput("watermark step needs the client profile's logo_path")
    return apply_watermark(image, _load_logo(ctx.logo_path), p)


@dataclass(frozen=True)
class StepDef:
    params: type[BaseModel]
    apply: Callable[[Image.Image, Any, ChainContext], Image.Image]


# Step name → definition. `encode` is handled last and separately: it writes the file.
STEPS: dict[str, StepDef] = {
    "watermark": StepDef(WatermarkParams, _watermark),
}


def validate_chain(chain: list[StepSpec]) -> list[tuple[str, BaseModel]]:
    """Parsed (name, params) for every step; raises InvalidInput naming the step and field."""
    parsed = []
    allowed = sorted([*STEPS, "encode"])
    for i, spec in enumerate(chain):
        if spec.step == "encode":
            model: type[BaseModel] = EncodeParams
            if i != len(chain) - 1:
                raise InvalidInput(f"chain step {i} 'encode' must be the last step")
        elif spec.step in STEPS:
            model = STEPS[spec.step].params
        else:
            raise InvalidInput(f"chain step {i}: unknown step {spec.step!r}; allowed: {allowed}")
        try:
            parsed.append((spec.step, model.model_validate(spec.params)))
        except ValidationError as exc:
            raise InvalidInput(f"chain step {i} {spec.step!r}: {describe_validation_error(exc)}") from exc
    return parsed


def run_chain(image: Image.Image, chain: list[StepSpec], ctx: ChainContext) -> tuple[Image.Image, EncodeParams]:
    """Apply every step but `encode`; return the image and the encode settings."""
    encode = EncodeParams()
    for name, params in validate_chain(chain):
        if name == "encode":
            encode = params  # type: ignore[assignment]
        else:
            image = STEPS[name].apply(image, params, ctx)
    return image, encode


@task(name="postprocess")
def postprocess_candidate(raw_path: str, chain: list[StepSpec], ctx: ChainContext, out_stem: str) -> str:
    """Run the chain on one generated image and write the encoded file; returns its path."""
    with Image.open(raw_path) as raw:
        image, encode = run_chain(raw.convert("RGB"), chain, ctx)
    fmt = encode.format or ctx.output_format
    metadata = {**ctx.metadata, "chain": [s.model_dump() for s in chain]}
    return str(encode_image(image, Path(out_stem), fmt, encode.quality, metadata).resolve())
