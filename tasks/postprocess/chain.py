"""The post-processing chain: a recipe's steps, validated up front, run in order.

The chain is data (`Recipe.chain`, a list of `StepSpec`). Every step name maps
to a parameter model (extra fields forbidden, so a misspelt field is an error
naming it) and a pure image function `(image, params, ctx) -> image`.
`prepare_chain` checks the whole list — names, parameters, and what the steps
need from the context (a logo, a palette, a refiner, a signer) — before any
image is processed.

One asset can yield several formats: a step whose parameters list several
variants (a reframe with `ratios: ["9:16", "1:1", "4:5"]`) forks the rest of the
chain, and each branch runs the remaining steps and is encoded on its own. The
first branch is the main output; the others come back as extra outputs
labelled by variant ("1x1", "4x5"). Branches run one after another, so memory
holds the image at the fork plus one branch, never all formats at once.

`postprocess_candidates` is the Prefect task the flow calls: every variant of
an asset, steps inline, the task retried when a refiner's failure is transient.
`postprocess_candidate` (one image, each step its own task) is kept for callers
that want every step visible in the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image
from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, Field, ValidationError

from brandforge.models import Candidate, InvalidInput, StepSpec, describe_validation_error
from brandforge.tasks.cpu import cpu_slot
from brandforge.tasks.postprocess import faces, finish, grade, reframe, upscale
from brandforge.tasks.postprocess.context import ChainContext, load_block, resolve_refiner, run_async
from brandforge.tasks.postprocess.encode import EncodeParams, encode_image, to_srgb
from brandforge.tasks.postprocess.watermark import WatermarkParams, apply_watermark
from brandforge.tasks.retry import retry_transient_only

__all__ = ["STEPS", "ChainContext", "PostprocessResult", "postprocess_candidate", "postprocess_candidates", "prepare_chain",
           "run_chain", "validate_chain"]

StepOutput = Image.Image | tuple[Image.Image, dict[str, Any]]


@dataclass(frozen=True)
class StepDef:
    """A registered step: its parameter model, its image function, and optional hooks.

    `check(params, ctx)` raises InvalidInput for what the context lacks (before any pixels);
    `variants(params)` returns [(label, params)] when one step yields several outputs.
    """

    params: type[BaseModel]
    apply: Callable[[Image.Image, Any, ChainContext], StepOutput]
    check: Callable[[Any, ChainContext], None] | None = None
    variants: Callable[[Any], list[tuple[str, Any]]] | None = None


# --------------------------------------------------------------------------- step adapters


@lru_cache(maxsize=8)
def _load_logo(path: str) -> Image.Image:
    with Image.open(path) as logo:
        return logo.convert("RGBA")


def _check_watermark(p: WatermarkParams, ctx: ChainContext) -> None:
    if p.text:
        if p.font_path and not Path(p.font_path).is_file():
            raise InvalidInput(f"watermark font_path {p.font_path!r} does not exist")
        return
    if not ctx.logo_path:
        raise InvalidInput("watermark step needs the client profile's logo_path, or a 'text' parameter")
    if not Path(ctx.logo_path).is_file():
        raise InvalidInput(f"watermark logo_path {ctx.logo_path!r} does not exist")


def _watermark(image: Image.Image, p: WatermarkParams, ctx: ChainContext) -> Image.Image:
    logo = None if p.text else _load_logo(ctx.logo_path)  # type: ignore[arg-type]
    return apply_watermark(image, logo, p)


def _reframe_uses_provider(p: reframe.ReframeParams, ctx: ChainContext) -> bool:
    if p.mode != "extend" or p.fill in ("mirror", "blur"):
        return False
    if p.fill == "provider" or p.refiner:
        return True
    # auto: the profile's refiner when it can outpaint, else the local fallback.
    return ctx.refiner is not None and "outpaint" in getattr(ctx.refiner, "offers", {"outpaint"})


def _check_reframe(p: reframe.ReframeParams, ctx: ChainContext) -> None:
    if p.mode == "crop" and p.fill != "auto":
        raise InvalidInput(f"reframe fill {p.fill!r} only applies to mode 'extend' (mode is 'crop')")
    if p.mode == "extend" and p.attention != "saliency":
        raise InvalidInput(f"reframe attention {p.attention!r} only applies to mode 'crop' (mode is 'extend')")
    if _reframe_uses_provider(p, ctx):
        resolve_refiner(p.refiner, ctx, "reframe (extend with fill 'provider')", "outpaint")


def _reframe(image: Image.Image, p: reframe.ReframeParams, ctx: ChainContext) -> StepOutput:
    ratio = p.ratios[0]
    if _reframe_uses_provider(p, ctx):
        refiner = resolve_refiner(p.refiner, ctx, "reframe", "outpaint")
        canvas, mask, geometry = reframe.outpaint_inputs(image, reframe.parse_ratio(ratio))
        painted = run_async(lambda: refiner.outpaint(canvas, mask, p.prompt, ctx.seed))
        return reframe.merge_outpaint(image, painted, geometry), {"ratio": ratio, "fill": "provider"}
    fill = "blur" if p.fill in ("auto", "provider") else p.fill
    out = reframe.reframe_local(image, ratio, p.mode, fill, faces=p.attention == "saliency+faces")
    if p.main_ratio and p.mode == "crop":
        # An extra format is never smaller than the main one: its short side is at least the main crop's.
        out = reframe.at_least_short_side(out, min(reframe.crop_size(image.size, reframe.parse_ratio(p.main_ratio))))
    return out, {"ratio": ratio, "mode": p.mode, **({"fill": fill} if p.mode == "extend" else {})}


def _reframe_variants(p: reframe.ReframeParams) -> list[tuple[str, Any]]:
    main = p.ratios[0]
    return [(reframe.ratio_label(r), p.model_copy(update={"ratios": [r], "main_ratio": None if r == main else main}))
            for r in p.ratios]


def _check_upscale(p: upscale.UpscaleParams, ctx: ChainContext) -> None:
    if p.method == "provider":
        resolve_refiner(p.refiner, ctx, "upscale (method 'provider')", "upscale")
    if p.method == "realesrgan-weights" and not Path(p.weights_path).is_file():  # type: ignore[arg-type]
        raise InvalidInput(f"upscale weights_path {p.weights_path!r} does not exist")


def _upscale(image: Image.Image, p: upscale.UpscaleParams, ctx: ChainContext) -> StepOutput:
    refiner = resolve_refiner(p.refiner, ctx, "upscale", "upscale") if p.method == "provider" else None
    before = image.size
    out = upscale.upscale_image(image, p, refiner)
    return out, {"method": p.method, "from": list(before), "to": list(out.size)}


def _check_faces(p: faces.FaceRestoreParams, ctx: ChainContext) -> None:
    resolve_refiner(p.refiner, ctx, "faces", "faces")


def _faces(image: Image.Image, p: faces.FaceRestoreParams, ctx: ChainContext) -> StepOutput:
    return faces.restore_faces(image, p, resolve_refiner(p.refiner, ctx, "faces", "faces"))


def _check_grade(p: grade.GradeParams, ctx: ChainContext) -> None:
    grade.parse_palette(ctx.palette)


def _grade(image: Image.Image, p: grade.GradeParams, ctx: ChainContext) -> StepOutput:
    before = grade.palette_distance(image, ctx.palette)
    out = grade.grade_image(image, ctx.palette, p)
    after = grade.palette_distance(out, ctx.palette)
    return out, {"palette_distance_before": round(before, 3), "palette_distance_after": round(after, 3)}


def _grain(image: Image.Image, p: finish.GrainParams, ctx: ChainContext) -> Image.Image:
    return finish.add_grain(image, p, ctx.seed)


# Step name → definition. `encode` is handled last and separately: it writes the file.
STEPS: dict[str, StepDef] = {
    "watermark": StepDef(WatermarkParams, _watermark, _check_watermark),
    "reframe": StepDef(reframe.ReframeParams, _reframe, _check_reframe, _reframe_variants),
    "upscale": StepDef(upscale.UpscaleParams, _upscale, _check_upscale),
    "faces": StepDef(faces.FaceRestoreParams, _faces, _check_faces),
    "grade": StepDef(grade.GradeParams, _grade, _check_grade),
    "grain": StepDef(finish.GrainParams, _grain),
    "vignette": StepDef(finish.VignetteParams, lambda im, p, ctx: finish.apply_vignette(im, p)),
    "soft_light": StepDef(finish.SoftLightParams, lambda im, p, ctx: finish.apply_soft_light(im, p)),
    "lens_distortion": StepDef(finish.LensDistortionParams, lambda im, p, ctx: finish.apply_lens_distortion(im, p)),
}


def _check_encode(p: EncodeParams, ctx: ChainContext) -> None:
    if p.c2pa and not p.c2pa_signer and ctx.c2pa_signer is None:
        raise InvalidInput("encode c2pa: true needs a C2PA signer: set c2pa_signer to a saved block or the client profile's c2pa_signer")


# --------------------------------------------------------------------------- validation


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


def prepare_chain(chain: list[StepSpec], ctx: ChainContext) -> tuple[list[tuple[str, BaseModel]], EncodeParams]:
    """Validate parameters and what each step needs from `ctx`; returns the steps and the encode settings."""
    parsed = validate_chain(chain)
    encode = EncodeParams()
    steps = []
    for i, (name, params) in enumerate(parsed):
        try:
            if name == "encode":
                encode = params  # type: ignore[assignment]
                _check_encode(encode, ctx)
                continue
            check = STEPS[name].check
            if check:
                check(params, ctx)
        except InvalidInput as exc:
            raise InvalidInput(f"chain step {i} {name!r}: {exc}") from exc
        steps.append((name, params))
    return steps, encode


# --------------------------------------------------------------------------- running


def apply_step(name: str, image: Image.Image, params: BaseModel, ctx: ChainContext) -> tuple[Image.Image, dict[str, Any]]:
    """Run one step; always returns (image, notes)."""
    out = STEPS[name].apply(image, params, ctx)
    return out if isinstance(out, tuple) else (out, {})


StepRunner = Callable[[str, Image.Image, BaseModel, ChainContext], tuple[Image.Image, dict[str, Any]]]


@dataclass
class ChainOutput:
    label: str  # "" for the main output, else the variant labels joined by "-"
    image: Image.Image
    notes: list[dict[str, Any]]


def iter_chain(
    image: Image.Image,
    steps: list[tuple[str, BaseModel]],
    ctx: ChainContext,
    runner: StepRunner = apply_step,
    _labels: tuple[str, ...] = (),
    _notes: tuple[dict[str, Any], ...] = (),
) -> Iterator[ChainOutput]:
    """Run the steps, yielding one output per branch; each is finished before the next starts."""
    notes = list(_notes)
    for i, (name, params) in enumerate(steps):
        variants = STEPS[name].variants(params) if STEPS[name].variants else [("", params)]
        if len(variants) > 1:
            for label, vparams in variants:
                out, note = runner(name, image, vparams, ctx)
                yield from iter_chain(out, steps[i + 1 :], ctx, runner, (*_labels, label), (*notes, {"step": name, **note}))
            return
        image, note = runner(name, image, variants[0][1], ctx)
        notes.append({"step": name, **note})
    yield ChainOutput("-".join(_labels), image, notes)


def run_chain(image: Image.Image, chain: list[StepSpec], ctx: ChainContext) -> tuple[Image.Image, EncodeParams]:
    """Apply every step but `encode` to the main branch; return the image and the encode settings."""
    steps, encode = prepare_chain(chain, ctx)
    first = next(iter_chain(image, steps, ctx))
    return first.image, encode


@task(
    name="postprocess-step",
    task_run_name="{name}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_transient_only,
    cache_policy=NONE,
    persist_result=False,
)
def run_step(name: str, image: Image.Image, params: BaseModel, ctx: ChainContext) -> tuple[Image.Image, dict[str, Any]]:
    """One step as a Prefect task: visible in the UI, retried when a refiner call fails transiently."""
    return apply_step(name, image, params, ctx)


def _task_runner() -> StepRunner:
    from prefect.context import TaskRunContext

    # Inside a Prefect run each step is its own task; called bare (tests, benches) steps run inline.
    return run_step if TaskRunContext.get() is not None else apply_step


class PostprocessResult(BaseModel):
    """The main output file, the extra formats by label, and what each step reported."""

    path: str
    label: str = Field("", description="The main output's variant label (e.g. '4x5'); '' when the chain does not fork.")
    extra_outputs: dict[str, str] = Field(default_factory=dict)
    report: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)


def _resolve_signer(encode: EncodeParams, ctx: ChainContext) -> Any:
    if not encode.c2pa:
        return None
    return load_block(encode.c2pa_signer, ctx.client) if encode.c2pa_signer else ctx.c2pa_signer


def _log_notes(label: str, path: str, notes: list[dict[str, Any]]) -> None:
    """What the steps reported (palette distance before/after, faces found, sizes) in the run's log."""
    from prefect.context import TaskRunContext
    from prefect.logging import get_logger, get_run_logger

    logger = get_run_logger() if TaskRunContext.get() is not None else get_logger("brandforge.postprocess")
    summary = "; ".join(f"{n['step']}: " + ", ".join(f"{k}={v}" for k, v in n.items() if k != "step") for n in notes if len(n) > 1)
    logger.info("%s → %s%s", label, Path(path).name, f" ({summary})" if summary else "")


def _load_source(path: str) -> Image.Image:
    with Image.open(path) as raw:
        image = to_srgb(raw)
        # to_srgb returns the file's own image when nothing needs converting: detach it from the file.
        return image.copy() if image is raw else image


@task(name="postprocess", cache_policy=NONE)
def postprocess_candidate(raw_path: str, chain: list[StepSpec], ctx: ChainContext, out_stem: str) -> PostprocessResult:
    """Run the chain on one generated image and write every output; returns their paths and the step reports."""
    return write_outputs(raw_path, chain, ctx, out_stem, _task_runner())


@task(
    name="postprocess-candidates",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_transient_only,
    cache_policy=NONE,
)
def postprocess_candidates(raw_paths: list[str], chain: list[StepSpec], ctx: ChainContext, out_dir: str) -> list[Candidate]:
    """The chain on every generated variant of one asset, as one task: `final-<i>` files under `out_dir`.

    One task, steps inline: a task run per step and per variant cost the Prefect API a dozen
    writes per asset (issue 11's profile) for steps that take milliseconds; a refiner's
    transient failure retries the whole chain of the asset, which is cheap and deterministic.
    The pixel work takes a CPU slot (tasks/cpu.py) inside the task, so the task run's own API
    calls do not keep a core's slot idle."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    candidates = []
    with cpu_slot:
        for i, raw in enumerate(raw_paths):
            # One file per format: the main one, plus extras (e.g. other aspect ratios) by label.
            final = write_outputs(raw, chain, ctx, str(Path(out_dir) / f"final-{i}"), apply_step)
            candidates.append(Candidate(index=i, raw_path=raw, path=final.path, extra_outputs=final.extra_outputs))
    return candidates


def write_outputs(raw_path: str, chain: list[StepSpec], ctx: ChainContext, out_stem: str,
                  runner: StepRunner = apply_step) -> PostprocessResult:
    """The chain on one image, every output encoded and written; `runner` runs each step."""
    steps, encode = prepare_chain(chain, ctx)
    signer = _resolve_signer(encode, ctx)
    fmt = encode.format or ctx.output_format
    result: PostprocessResult | None = None
    # No local reference to the source: once the first step has run, it can be freed.
    for out in iter_chain(_load_source(raw_path), steps, ctx, runner):
        stem = Path(out_stem if result is None else f"{out_stem}-{out.label}")
        metadata = {**ctx.metadata, "chain": [s.model_dump() for s in chain], "postprocess": out.notes}
        if out.label:
            metadata["variant"] = out.label
        path = str(encode_image(out.image, stem, fmt, encode, metadata, signer).resolve())
        _log_notes(out.label or "main", path, out.notes)
        if result is None:
            result = PostprocessResult(path=path, label=out.label, report={"main": out.notes})
        else:
            result.extra_outputs[out.label] = path
            result.report[out.label] = out.notes
    assert result is not None  # iter_chain always yields at least one output
    return result

