"""The chain as data: validated before any pixel, deterministic, and forking into several formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brandforge.models import InvalidInput, StepSpec
from brandforge.tasks.postprocess import chain as chain_module
from brandforge.tasks.postprocess.chain import ChainContext, postprocess_candidate, prepare_chain, run_chain, validate_chain
from brandforge.tasks.postprocess.encode import read_embedded_params
from tests.postprocess.images import make_logo, red_mask, subject_scene

PALETTE = ("#14213d", "#e8a838", "#fcf6ec", "#2b6f9e", "#c8553d")


def spec(step: str, **params) -> StepSpec:
    return StepSpec(step=step, params=params)


@pytest.fixture
def ctx(tmp_path) -> ChainContext:
    logo = tmp_path / "logo.png"
    make_logo().save(logo)
    return ChainContext(seed=42, palette=PALETTE, logo_path=str(logo), metadata={"prompt": "a red ball", "seed": 42})


@pytest.fixture
def raw(tmp_path) -> str:
    image, _ = subject_scene((640, 360), centre=(0.8, 0.5))
    path = tmp_path / "raw.png"
    image.save(path)
    return str(path)


LOCAL_CHAIN = [
    spec("reframe", ratios=["9:16", "1:1", "4:5"]),
    spec("upscale", long_side=720),
    spec("grade", strength=0.5),
    spec("watermark", anchor="bottom-right", scale=0.2, opacity=1),
    spec("grain", amount=4),
    spec("vignette", strength=0.2),
    spec("soft_light", amount=0.2),
    spec("lens_distortion", k=0.02),
    spec("encode", format="png"),
]


# --------------------------------------------------------------------------- validation before pixels


def test_unknown_step_names_the_allowed_ones():
    with pytest.raises(InvalidInput, match=r"chain step 1: unknown step 'sharpen'; allowed: \[.*'grade'.*'reframe'.*\]"):
        validate_chain([spec("grain"), spec("sharpen")])


def test_misspelt_field_is_named():
    with pytest.raises(InvalidInput, match=r"chain step 0 'grain': amout: Extra inputs are not permitted"):
        validate_chain([spec("grain", amout=3)])


def test_bad_value_names_field_and_range():
    with pytest.raises(InvalidInput, match=r"chain step 0 'grade': strength: Input should be less than or equal to 1"):
        validate_chain([spec("grade", strength=3)])
    with pytest.raises(InvalidInput, match=r"upscale needs exactly one of scale"):
        validate_chain([spec("upscale")])


def test_encode_must_be_last():
    with pytest.raises(InvalidInput, match="'encode' must be the last step"):
        validate_chain([spec("encode"), spec("grain")])


def test_context_needs_are_checked_before_any_image(ctx, raw, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(chain_module, "apply_step", lambda *a: calls.append(a))
    cases = [
        ([spec("grain"), spec("faces")], ctx, "faces step needs a refiner"),
        ([spec("upscale", scale=2, method="provider")], ctx, "upscale .method 'provider'. step needs a refiner"),
        ([spec("reframe", ratios=["1:1"], mode="extend", fill="provider")], ctx, "needs a refiner"),
        ([spec("watermark")], ChainContext(seed=1), "needs the client profile's logo_path, or a 'text'"),
        ([spec("grade")], ChainContext(seed=1), "palette must hold at least one"),
        ([spec("encode", c2pa=True)], ctx, "needs a C2PA signer"),
        ([spec("upscale", scale=2, method="realesrgan-weights", weights_path=str(tmp_path / "none.pth"))], ctx, "does not exist"),
        ([spec("reframe", ratios=["1:1"], fill="mirror")], ctx, "only applies to mode 'extend'"),
    ]
    for chain, c, message in cases:
        with pytest.raises(InvalidInput, match=message):
            postprocess_candidate.fn(raw, chain, c, str(tmp_path / "out"))
    assert calls == [] and not list(tmp_path.glob("out*"))


def test_text_watermark_needs_no_logo():
    prepare_chain([spec("watermark", text="© brand")], ChainContext(seed=1))


# --------------------------------------------------------------------------- running


def test_several_formats_in_one_run(ctx, raw, tmp_path):
    result = postprocess_candidate.fn(raw, LOCAL_CHAIN, ctx, str(tmp_path / "final-0"))
    assert Path(result.path).name == "final-0.png"
    assert result.label == "9x16" and set(result.extra_outputs) == {"1x1", "4x5"}
    sizes = {label: Image.open(p).size for label, p in {"9x16": result.path, **result.extra_outputs}.items()}
    assert sizes["9x16"][1] == 720 and abs(sizes["9x16"][0] - 405) <= 1
    assert sizes["1x1"] == (720, 720) and sizes["4x5"] == (576, 720)
    for label, path in {"9x16": result.path, **result.extra_outputs}.items():
        with Image.open(path) as img:
            assert red_mask(img).sum() > 0.9 * np.pi * (0.16 * 720) ** 2 * 0.9  # the subject is in every format
        meta = read_embedded_params(path)
        assert meta["prompt"] == "a red ball" and meta["chain"][0]["step"] == "reframe"
        grade_note = next(n for n in meta["postprocess"] if n["step"] == "grade")
        assert grade_note["palette_distance_after"] < grade_note["palette_distance_before"]
    assert [n["ratio"] for n in result.report["1x1"] if n["step"] == "reframe"] == ["1:1"]


def test_same_inputs_same_bytes_other_seed_other_grain(ctx, raw, tmp_path):
    a = postprocess_candidate.fn(raw, LOCAL_CHAIN, ctx, str(tmp_path / "a"))
    b = postprocess_candidate.fn(raw, LOCAL_CHAIN, ctx, str(tmp_path / "b"))
    c = postprocess_candidate.fn(raw, LOCAL_CHAIN, ChainContext(**{**ctx.__dict__, "seed": 43}), str(tmp_path / "c"))
    pix = lambda p: np.asarray(Image.open(p))  # noqa: E731
    assert np.array_equal(pix(a.path), pix(b.path))
    assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    assert not np.array_equal(pix(a.path), pix(c.path))


def test_run_chain_returns_the_main_branch(ctx):
    image, _ = subject_scene((640, 360))
    out, encode = run_chain(image, [spec("reframe", ratios=["1:1", "9:16"]), spec("encode", format="webp", quality=70)], ctx)
    assert out.size == (360, 360) and encode.format == "webp" and encode.quality == 70


def test_input_is_not_modified(ctx):
    image, _ = subject_scene((320, 180))
    before = image.tobytes()
    run_chain(image, LOCAL_CHAIN, ctx)
    assert image.tobytes() == before


# --------------------------------------------------------------------------- provider-backed steps through the chain


def test_outpaint_through_the_refiner_keeps_the_original(ctx, raw, tmp_path, replicate, fake):
    c = ChainContext(**{**ctx.__dict__, "refiner": replicate})
    result = postprocess_candidate.fn(raw, [spec("reframe", ratios=["1:1"], mode="extend", prompt="studio"), spec("encode", format="png")], c, str(tmp_path / "o"))
    out = np.asarray(Image.open(result.path).convert("RGB"))
    assert out.shape == (640, 640, 3)
    top = (640 - 360) // 2
    assert (out[: top - 2] == [255, 0, 255]).all() and (out[top + 360 + 2 :] == [255, 0, 255]).all()  # painted by the "model"
    assert np.array_equal(out[top : top + 360], np.asarray(Image.open(raw).convert("RGB")))  # original pixels kept exactly
    assert fake.state.inputs[0]["inputs"]["seed"] == 42 and fake.state.inputs[0]["inputs"]["prompt"] == "studio"


def test_extend_without_a_refiner_falls_back_to_local(ctx, raw, tmp_path, fake):
    result = postprocess_candidate.fn(raw, [spec("reframe", ratios=["1:1"], mode="extend"), spec("encode", format="png")], ctx, str(tmp_path / "l"))
    assert Image.open(result.path).size == (640, 640)
    assert result.report["main"][0]["fill"] == "blur" and fake.state.calls == []


def test_provider_upscale_through_the_chain(ctx, raw, tmp_path, stability):
    c = ChainContext(**{**ctx.__dict__, "refiner": stability})
    result = postprocess_candidate.fn(raw, [spec("upscale", method="provider", long_side=1000), spec("encode", format="jpeg")], c, str(tmp_path / "u"))
    assert Image.open(result.path).size == (1000, 562)
    assert result.report["main"][0] == {"step": "upscale", "method": "provider", "from": [640, 360], "to": [1000, 562]}
