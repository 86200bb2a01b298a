"""Parameter mapping per provider (one strength convention, converted), refusals, and the HTTP error map.

Everything goes over HTTP to the fakes; the fakes record what arrived on the wire.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from brandforge.blocks.http import parse_retry_after, raise_for_status
from brandforge.models import RateLimited, Rejected, Transient
from brandforge.tasks.generate import run_generation
from tests.fakes.base import Knobs, serve



def run(block, request):
    return asyncio.run(run_generation(request, block, poll_every=0.05, deadline_s=20, base_delay=0.05, use_limits=False))


@pytest.mark.parametrize("provider", ["replicate"], indirect=True)
def test_replicate_maps_strength_seed_size_and_batch(provider, make_request):
    fake, block = provider
    run(block, make_request(strength=0.35, seed=77, batch_size=2, width=64, height=64))
    inputs = fake.requests[-1]["body"]["input"]
    assert inputs["prompt_strength"] == 0.35 and inputs["seed"] == 77 and inputs["num_outputs"] == 2
    assert inputs["width"] == 64 and inputs["image"].startswith("data:image/png;base64,")
    assert fake.requests[-1]["path"] == "/v1/models/stability-ai/sdxl/predictions"


@pytest.mark.parametrize("provider", ["replicate"], indirect=True)
def test_replicate_version_and_deployment_forms_and_files_upload(provider, make_request):
    fake, block = provider
    run(block.model_copy(update={"version": "39ed52f2", "input_upload": "files_api"}), make_request())
    assert fake.requests[-1]["path"] == "/v1/predictions" and fake.requests[-1]["body"]["version"] == "39ed52f2"
    assert fake.requests[-2]["path"] == "/v1/files"  # uploaded, then referenced
    assert fake.requests[-1]["body"]["input"]["image"].startswith(f"{fake.url}/v1/files/")
    run(block.model_copy(update={"deployment": "acme/sdxl-prod"}), make_request(seed=2))
    assert fake.requests[-1]["path"] == "/v1/deployments/acme/sdxl-prod/predictions"


@pytest.mark.parametrize("provider", ["replicate"], indirect=True)
def test_replicate_prefer_wait_answers_with_data_uris(provider, make_request):
    fake, block = provider
    fake.knobs.latency_s = 0.2
    handle, images, timings = run(block.model_copy(update={"prefer_wait_s": 5}), make_request())
    assert fake.requests[-1]["headers"]["prefer"] == "wait=5"
    assert len(images) == 1 and fake.stats["polls"] == 0  # the answer was the result; nothing polled


@pytest.mark.parametrize("provider", ["replicate"], indirect=True)
def test_wrong_field_name_gets_the_providers_422_and_is_not_retried(provider, make_request):
    fake, block = provider
    with pytest.raises(Rejected, match="Additional property strength is not allowed"):
        run(block.model_copy(update={"extra_input": {"strength": 0.5}}), make_request())
    assert fake.stats["submits"] == 1


@pytest.mark.parametrize("provider", ["fal"], indirect=True)
def test_fal_follows_returned_urls_and_sends_webhook_query(provider, make_request):
    fake, block = provider
    run(block.model_copy(update={"webhook_url": "http://127.0.0.1:9/hook?x=1"}), make_request(strength=0.4))
    sent = fake.requests[-1]
    assert sent["subpath"] == "image-to-image" and sent["query"]["fal_webhook"] == "http://127.0.0.1:9/hook?x=1"
    assert sent["body"]["strength"] == 0.4 and sent["body"]["negative_prompt"] == "blurry"
    # A rebuilt URL with the subpath does not resolve (which is why the block never builds one).
    job_id = next(iter(fake.jobs))
    resp = httpx.get(f"{fake.url}/fal-ai/fast-sdxl/image-to-image/requests/{job_id}/status",
                     headers={"Authorization": block_auth(block)})
    assert resp.status_code in (404, 405)


def block_auth(block) -> str:
    return f"Key {block.api_key.get_secret_value()}"


@pytest.mark.parametrize("provider", ["fal"], indirect=True)
def test_fal_flux_leaves_an_unset_negative_prompt_out_and_refuses_a_set_one(provider, make_request, caplog):
    fake, block = provider
    flux = block.model_copy(update={"model": "fal-ai/flux/dev/image-to-image"})
    run(flux, make_request())
    assert "negative_prompt" not in fake.requests[-1]["body"]
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    before = len(fake.requests)
    with pytest.raises(Rejected, match="negative_prompt is not supported by fal"):
        run(flux, make_request(negative_prompt="text, watermark"))
    assert len(fake.requests) == before  # refused before any call


@pytest.mark.parametrize("provider", ["stability"], indirect=True)
def test_stability_multipart_fields_and_json_accept(provider, make_request):
    fake, block = provider
    run(block, make_request(strength=0.45, seed=5))
    fields = fake.requests[-1]["fields"]
    assert fields["mode"] == "image-to-image" and fields["strength"] == "0.45" and fields["seed"] == "5"
    assert fields["model"] == "sd3.5-large" and fields["cfg_scale"] == "7.5"
    assert fake.requests[-1]["headers"]["accept"] == "image/*"
    _, images, _ = run(block.model_copy(update={"accept": "json", "endpoint": "ultra"}), make_request(seed=6))
    assert "mode" not in fake.requests[-1]["fields"] and fake.requests[-1]["headers"]["accept"] == "application/json"
    assert len(images) == 1


@pytest.mark.parametrize("provider", ["stability"], indirect=True)
def test_stability_403_moderation_is_a_refusal(provider, make_request):
    fake, block = provider
    with pytest.raises(Rejected, match="content moderation"):
        run(block, make_request(prompt="moderated mug"))


@pytest.mark.parametrize("provider", ["openai"], indirect=True)
def test_openai_maps_strength_to_fidelity_and_folds_prompts(provider, make_request, caplog):
    fake, block = provider
    run(block, make_request(strength=0.3, prompt_2="studio light", batch_size=2, width=1536, height=1024))
    fields = fake.requests[-1]["fields"]
    assert fields["input_fidelity"] == "high" and fields["n"] == "2" and fields["size"] == "1536x1024"
    assert "studio light" in fields["prompt"] and "Avoid: blurry" in fields["prompt"]
    assert not {"seed", "strength", "negative_prompt", "steps", "guidance_scale"} & set(fields)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # the derived seed is simply not sent


@pytest.mark.parametrize("provider", ["leonardo"], indirect=True)
def test_leonardo_uploads_init_image_and_inverts_strength(provider, make_request):
    fake, block = provider
    run(block, make_request(strength=0.7, steps=30, width=128, height=96))
    body = fake.requests[-1]["body"]
    assert body["init_strength"] == pytest.approx(0.3) and body["modelId"] == block.model
    assert body["init_image_id"] in fake.uploads and fake.uploads[body["init_image_id"]]["data"]
    assert (body["width"], body["height"]) == (128, 96) and body["num_inference_steps"] == 30


@pytest.mark.parametrize("provider", ["leonardo"], indirect=True)
@pytest.mark.parametrize("field,value,words", [("strength", 0.99, "init_strength"), ("steps", 4, "10-60"),
                                               ("guidance_scale", 0.5, "1-20")])
def test_leonardo_refuses_a_recipe_value_outside_its_range_before_any_call(provider, make_request, field, value, words):
    fake, block = provider
    with pytest.raises(Rejected, match=words):
        run(block, make_request(**{field: value}))
    assert fake.requests == []


def test_s3_presigned_upload_refuses_an_auth_header(make_request, tmp_path):
    from tests.fakes.leonardo import FakeLeonardo, TOKEN

    fake = FakeLeonardo(Knobs())
    with serve(fake):
        init = httpx.post(f"{fake.url}/api/rest/v1/init-image", json={"extension": "png"},
                          headers={"authorization": f"Bearer {TOKEN}"}).json()["uploadInitImage"]
        fields = json.loads(init["fields"])
        resp = httpx.post(init["url"], data=fields, files={"file": ("a.png", b"x", "image/png")},
                          headers={"authorization": f"Bearer {TOKEN}"})
        assert resp.status_code == 400 and b"Only one auth mechanism" in resp.content


# --------------------------------------------------------------------------- the HTTP error map


def _resp(code: int, body: dict | str = "", headers: dict | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
    return httpx.Response(code, content=content, headers=headers or {}, request=httpx.Request("POST", "http://x/"))


def test_status_codes_map_to_retryable_or_not():
    with pytest.raises(RateLimited) as rl:
        raise_for_status(_resp(429, {"detail": "slow down"}, {"Retry-After": "7"}), "p")
    assert rl.value.retry_after == 7 and rl.value.retryable
    for code in (500, 502, 503, 504, 408):
        with pytest.raises(Transient):
            raise_for_status(_resp(code, {"detail": "x"}), "p")
    with pytest.raises(Rejected, match="Unknown parameter: 'strength'"):
        raise_for_status(_resp(400, {"error": {"message": "Unknown parameter: 'strength'."}}), "openai")
    with pytest.raises(Rejected, match="image_url: Field required"):
        raise_for_status(_resp(422, {"detail": [{"loc": ["body", "image_url"], "msg": "Field required"}]}), "fal")
    with pytest.raises(Rejected, match="strength: required"):
        raise_for_status(_resp(400, {"name": "bad_request", "errors": ["strength: required"]}), "stability")
    assert raise_for_status(_resp(204), "p").status_code == 204


def test_retry_after_forms():
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"Retry-After": "3"}) == 3
    assert 0 <= parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) <= 1  # in the past: go now
    assert parse_retry_after({}) is None
