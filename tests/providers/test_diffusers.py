"""DiffusersProvider on tiny random-weight pipelines the tests build (SD 1.5, InstructPix2Pix, SDXL)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from brandforge.blocks.providers.diffusers_local import DiffusersProvider  # noqa: E402
from brandforge.models import Rejected  # noqa: E402
from brandforge.tasks.generate import run_generation  # noqa: E402
from tests.providers.tiny_diffusers import build_sd15, build_sdxl  # noqa: E402


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
