"""DiffusersProvider on tiny random-weight pipelines the tests build (SD 1.5, InstructPix2Pix, SDXL)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from brandforge.blocks.providers.diffusers_local import DiffusersProvider  # noqa: E402
from brandforge.models import ControlSpec, LoraSpec, Rejected  # noqa: E402
from brandforge.tasks.generate import run_generation  # noqa: E402
from tests.providers.tiny_diffusers import build_sd15, build_sdxl, build_unet_lora  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {"sd15": build_sd15(root / "sd15"), "ip2p": build_sd15(root / "ip2p", instruct_pix2pix=True),
            "sdxl": build_sdxl(root / "sdxl")}


def run(block, request):
    return asyncio.run(run_generation(request, block, poll_every=0.05, deadline_s=60, use_limits=False))


def test_sd15_img2img_seeded_and_sized(models, make_request, tmp_path):
    block = DiffusersProvider(model_path=str(models["sd15"]), device="cpu", job_dir=str(tmp_path / "a"))
    assert block.kind() == "sd15"
    req = make_request(batch_size=2, steps=2, strength=0.6, width=64, height=64)
    handle, images, _ = run(block, req)
    assert len(images) == 2 and images[0].size == (64, 64)
    # Same request, fresh job folder: byte-identical pixels (seeded generator).
    again = DiffusersProvider(model_path=str(models["sd15"]), device="cpu", job_dir=str(tmp_path / "b"))
    _, images2, _ = run(again, req)
    assert images[0].tobytes() == images2[0].tobytes()


def test_instruct_pix2pix_uses_image_guidance_and_refuses_a_set_strength(models, make_request, tmp_path):
    block = DiffusersProvider(model_path=str(models["ip2p"]), device="cpu", job_dir=str(tmp_path / "j"))
    assert block.kind() == "instruct-pix2pix"
    req = make_request(steps=2, image_guidance_scale=1.8, width=64, height=64)
    assert block.call_kwargs(req)["image_guidance_scale"] == 1.8
    assert "strength" not in block.call_kwargs(req)  # unset: left out, no warning
    _, images, _ = run(block, req)
    assert len(images) == 1
    with pytest.raises(Rejected, match="strength is not supported by diffusers"):
        block.check_request(make_request(steps=2, strength=0.5))


def test_sdxl_passes_prompt_2(models, make_request, tmp_path):
    block = DiffusersProvider(model_path=str(models["sdxl"]), device="cpu", job_dir=str(tmp_path / "j"))
    assert block.kind() == "sdxl"
    req = make_request(steps=2, prompt_2="soft studio light", width=64, height=64)
    assert block.call_kwargs(req)["prompt_2"] == "soft studio light"
    _, images, _ = run(block, req)
    assert images[0].size == (64, 64)


def test_not_a_pipeline_folder_is_rejected_clearly(tmp_path, make_request):
    block = DiffusersProvider(model_path=str(tmp_path), device="cpu")
    with pytest.raises(Rejected, match="not a diffusers pipeline folder"):
        run(block, make_request())


def test_lora_changes_the_output_scale_zero_does_not_and_nothing_leaks(models, make_request, tmp_path):
    """A local LoRA file through load_lora_weights: it changes the pixels; scale 0 is the plain output; a plain
    request after LoRA requests on the same (cached) pipeline equals a fresh pipeline's output, byte for byte."""
    lora = build_unet_lora(models["sd15"], tmp_path / "loras" / "brand.safetensors")
    other = build_unet_lora(models["sd15"], tmp_path / "loras" / "other.safetensors", seed=2)
    base = dict(steps=2, strength=0.6, width=64, height=64)
    # A copy of the model folder: its pipeline is loaded fresh (the cache is per folder), never touched by a LoRA.
    fresh_folder = tmp_path / "fresh"
    __import__("shutil").copytree(models["sd15"], fresh_folder)
    fresh = DiffusersProvider(model_path=str(fresh_folder), device="cpu", job_dir=str(tmp_path / "fresh-jobs"))
    _, plain, _ = run(fresh, make_request(**base))

    block = DiffusersProvider(model_path=str(models["sd15"]), device="cpu", job_dir=str(tmp_path / "jobs"))
    _, with_lora, _ = run(block, make_request(**base, loras=(LoraSpec(weights=str(lora), scale=1.0),)))
    _, with_both, _ = run(block, make_request(**base, loras=(LoraSpec(weights=f"file://{lora}", scale=0.5),
                                                              LoraSpec(weights=str(other), scale=0.7))))
    _, scale_zero, _ = run(block, make_request(**base, loras=(LoraSpec(weights=str(lora), scale=0.0),)))
    _, after, _ = run(block, make_request(**base))
    assert with_lora[0].tobytes() != plain[0].tobytes()
    assert with_both[0].tobytes() not in (plain[0].tobytes(), with_lora[0].tobytes())
    assert scale_zero[0].tobytes() == plain[0].tobytes()
    assert after[0].tobytes() == plain[0].tobytes()  # no LoRA weights leaked into the cached pipeline
    _, again, _ = run(block, make_request(**base, loras=(LoraSpec(weights=str(lora), scale=1.0),), seed=1235))
    _, again2, _ = run(block, make_request(**base, loras=(LoraSpec(weights=str(lora), scale=1.0),), seed=1235))
    assert again[0].tobytes() == again2[0].tobytes()  # the cached adapter, re-enabled: reproducible


def test_diffusers_refuses_remote_loras_and_control_and_says_so(models, make_request, tmp_path):
    block = DiffusersProvider(model_path=str(models["sd15"]), device="cpu", job_dir=str(tmp_path / "j"))
    with pytest.raises(Rejected, match=r"loras: diffusers loads local LoRA files only.*https://example.com/x.safetensors"):
        block.check_request(make_request(loras=(LoraSpec(weights="https://example.com/x.safetensors"),)))
    with pytest.raises(Rejected, match="control is not supported by diffusers"):
        block.check_request(make_request(control=ControlSpec(kind="edges")))
    with pytest.raises(Rejected, match="cannot read LoRA file"):
        run(block, make_request(steps=2, loras=(LoraSpec(weights=str(tmp_path / "missing.safetensors")),)))
    assert block.lora_problem(LoraSpec(weights=str(tmp_path / "brand.safetensors"))) is None
