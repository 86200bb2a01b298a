"""Refiner blocks against the fake service over real HTTP: wire format, polling, uploads, error mapping."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from brandforge.blocks.refiners import ReplicateRefiner
from brandforge.models import RateLimited, Rejected, Transient
from brandforge.tasks.postprocess.context import to_png


def png(size=(40, 30), colour=(10, 120, 200)) -> bytes:
    return to_png(Image.new("RGB", size, colour))


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_replicate_upscale_polls_and_downloads(replicate, fake):
    out = decode(asyncio.run(replicate.upscale(png(), 4)))
    assert out.size == (160, 120)
    assert fake.state.calls == [("replicate", "nightmareai/real-esrgan")]
    sent = fake.state.inputs[0]
    assert sent["inputs"] == {"scale": 4, "face_enhance": False} and sent["image_keys"] == ["image"]
    assert sent["prefer"] == "wait=1"


def test_replicate_face_models_use_their_own_input_names(replicate, fake):
    asyncio.run(replicate.restore_faces(png(), "gfpgan"))
    asyncio.run(replicate.restore_faces(png(), "codeformer", fidelity=0.7))
    gfpgan, codeformer = fake.state.inputs
    assert gfpgan["model"] == "tencentarc/gfpgan" and gfpgan["image_keys"] == ["img"] and gfpgan["inputs"]["scale"] == 1
    assert codeformer["model"] == "sczhou/codeformer" and codeformer["inputs"]["codeformer_fidelity"] == 0.7


def test_large_input_goes_through_the_files_api(replicate, fake):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8))
    data = to_png(noisy)
    assert len(data) > 1_000_000
    out = decode(asyncio.run(replicate.upscale(data, 2)))
    assert out.size == (1400, 1400)
    assert [kind for kind, _ in fake.state.calls] == ["files", "replicate"]


def test_replicate_outpaint_sends_image_mask_prompt_and_seed(replicate, fake):
    mask = Image.new("L", (40, 30), 0)
    mask.paste(255, (0, 0, 40, 10))
    out = np.asarray(decode(asyncio.run(replicate.outpaint(png(), to_png(mask), "a beach", seed=7))))
    assert (out[:10] == [255, 0, 255]).all() and (out[10:] == [10, 120, 200]).all()
    assert fake.state.inputs[0]["inputs"] == {"prompt": "a beach", "seed": 7}
    assert fake.state.inputs[0]["image_keys"] == ["image", "mask"]


@pytest.mark.parametrize(
    "status, headers, error",
    [(429, {"retry-after": "7"}, RateLimited), (503, {}, Transient), (422, {}, Rejected), (401, {}, Rejected)],
)
def test_errors_are_mapped(replicate, fake, status, headers, error):
    fake.state.fail_next.append((status, headers))
    with pytest.raises(error) as info:
        asyncio.run(replicate.upscale(png(), 4))
    assert info.value.retryable == (status in (429, 503))
    if status == 429:
        assert info.value.retry_after == 7


def test_wrong_token_is_rejected(fake):
    # A refiner block saved with the older field names (api_token, timeout_s) still loads, into the one api_key.
    bad = ReplicateRefiner(api_token="nope", base_url=fake.url, timeout_s=5)
    assert bad.api_key.get_secret_value() == "nope" and bad.request_timeout_s == 5
    with pytest.raises(Rejected, match="401"):
        asyncio.run(bad.upscale(png(), 4))


def test_failed_prediction_is_rejected_with_its_error(replicate, fake):
    odd = replicate.model_copy(update={"upscale_model": "someone/unknown-model"})
    with pytest.raises(Rejected, match="failed: fake cannot run"):
        asyncio.run(odd.upscale(png(), 4))


def test_stability_upscale_and_inpaint(stability, fake):
    assert decode(asyncio.run(stability.upscale(png((48, 36)), 4))).size == (192, 144)
    with pytest.raises(Rejected, match="32-1536 px per side"):  # refused before the call, with the limits
        asyncio.run(stability.upscale(png((40, 30)), 4))
    with pytest.raises(Rejected, match="got 1100x1000"):
        asyncio.run(stability.upscale(png((1100, 1000)), 4))
    mask = Image.new("L", (40, 30), 0)
    mask.paste(255, (30, 0, 40, 30))
    out = np.asarray(decode(asyncio.run(stability.outpaint(png(), to_png(mask), "sky", seed=3))))
    assert (out[:, 30:] == [255, 0, 255]).all()
    assert [c for _, c in fake.state.calls][-1] == "/v2beta/stable-image/edit/inpaint"
    assert fake.state.inputs[-1]["fields"]["prompt"] == "sky" and fake.state.inputs[-1]["fields"]["seed"] == "3"
    with pytest.raises(Rejected, match="does not offer face restoration"):
        asyncio.run(stability.restore_faces(png()))


def test_secrets_stay_secret(replicate):
    assert "r8_test_token" not in repr(replicate) and "r8_test_token" not in replicate.model_dump_json()
