"""LoRAs on the diffusers block at profile check; structure control computed from the source (edges, depth, pose) with tiny random-weight transformers
models the test builds, the map's hash in the generation key, and control reaching fal's wire (flux-general
`controlnets`) on the fake."""

from __future__ import annotations

import asyncio
import io
import pytest
from PIL import Image
from pydantic import SecretStr, ValidationError

pytest.importorskip("transformers")

from brandforge.blocks.client_profile import ClientProfile  # noqa: E402
from brandforge.blocks.control_maps import control_map, pose_map, with_control_map  # noqa: E402
from brandforge.blocks.providers.fal import FalProvider  # noqa: E402
from brandforge.blocks.providers.replicate import ReplicateProvider  # noqa: E402
from brandforge.models import ControlSpec, GenerationRequest, LoadedAsset, Recipe, Rejected, RoutingRule, content_hash  # noqa: E402
from brandforge.tasks.generate import run_generation  # noqa: E402
from brandforge.tasks.prompt import plan_asset  # noqa: E402
from tests.routing.test_routing import with_rules  # noqa: E402

FLUX_GENERAL = "fal-ai/flux-general/image-to-image"


def build_depth_model(folder, seed: int = 0):
    """A Depth Anything model with a tiny DINOv2 backbone and random weights, saved with its processor."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=56,
                            patch_size=14, out_features=["stage1", "stage2"], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, patch_size=14, reassemble_factors=[2, 1])
    torch.manual_seed(seed)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=False, ensure_multiple_of=14).save_pretrained(folder)
    return str(folder)


def build_pose_model(folder, seed: int = 0):
    """A VitPose model (COCO 17 keypoints) with a tiny ViT backbone and random weights, saved with its processor."""
    import torch
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor

    backbone = VitPoseBackboneConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                     image_size=[64, 48], patch_size=[16, 16], out_indices=[2])
    torch.manual_seed(seed)
    VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17)).save_pretrained(folder)
    VitPoseImageProcessor(size={"height": 64, "width": 48}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def estimators(tmp_path_factory):
    root = tmp_path_factory.mktemp("estimators")
    return {"depth": build_depth_model(root / "depth"), "depth2": build_depth_model(root / "depth2", seed=1),
            "pose": build_pose_model(root / "pose")}


@pytest.fixture
def source(tmp_path):
    img = Image.new("RGB", (96, 80), "white")
    img.paste((30, 60, 200), (20, 16, 70, 64))
    path = tmp_path / "work" / "source.png"
    path.parent.mkdir()
    img.save(path)
    return path


def test_depth_and_pose_maps_are_images_of_the_source(estimators, source):
    png = source.read_bytes()
    depth = Image.open(io.BytesIO(control_map(png, "depth", {"depth": estimators["depth"]})))
    assert depth.mode == "L" and depth.size == (96, 80) and depth.getextrema() == (0, 255)  # normalised grey
    assert control_map(png, "depth", {"depth": estimators["depth"]}) == control_map(png, "depth", {"depth": estimators["depth"]})
    assert control_map(png, "depth", {"depth": estimators["depth2"]}) != control_map(png, "depth", {"depth": estimators["depth"]})
    pose = Image.open(io.BytesIO(pose_map(png, estimators["pose"], min_score=float("-inf"))))
    assert pose.mode == "RGB" and pose.size == (96, 80)
    assert pose.getbbox() is not None  # every keypoint kept: the skeleton is drawn
    blank = Image.open(io.BytesIO(pose_map(png, estimators["pose"], min_score=float("inf"))))
    assert blank.getbbox() is None  # no keypoint scores that high: black
    edges = Image.open(io.BytesIO(control_map(png, "edges")))
    assert edges.size == (96, 80) and edges.getextrema() == (0, 255)


def test_a_missing_model_is_an_error_naming_the_field(estimators, source, tmp_path):
    png = source.read_bytes()
    with pytest.raises(Rejected, match=r"control_models\.depth names no depth model"):
        control_map(png, "depth", {})
    with pytest.raises(Rejected, match=r"control_models\.pose '.*nowhere' does not load as a pose model"):
        control_map(png, "pose", {"pose": str(tmp_path / "nowhere")})


def test_the_map_is_computed_at_plan_time_and_its_hash_keys_the_generation(demo_profile, estimators, source):
    rules = [{"name": "depth-on-replicate", "match": "*", "provider": "replicate", "control": {"kind": "depth", "scale": 0.7}}]
    with pytest.raises(ValidationError, match=r"routing rule depth-on-replicate: asks for depth control .* control_models\.depth"):
        with_rules(demo_profile, rules)
    profile = with_rules(demo_profile, rules, control_models={"depth": estimators["depth"]})
    asset = LoadedAsset(client="demo", uri="file:///c/mug.jpg", name="mug.jpg", source_key="cd" * 32, path=str(source),
                        width=96, height=80, original_format="PNG")
    plan = plan_asset.fn(asset, profile)
    control = plan.request.control
    written = source.parent / f"control-depth-{control.map_sha256[:16]}.png"
    assert control.image == f"file://{written}" and content_hash(written.read_bytes()) == control.map_sha256
    assert plan.params["control"]["map_sha256"] == control.map_sha256  # recorded in the ledger's params
    assert plan_asset.fn(asset, profile).generation_key == plan.generation_key  # stable across reruns
    other = plan_asset.fn(asset, profile.model_copy(update={"control_models": {"depth": estimators["depth2"]}}))
    assert other.request.control.map_sha256 != control.map_sha256 and other.generation_key != plan.generation_key
    # The computed map reaches Replicate's wire as the control image.
    inputs = ReplicateProvider(api_key=SecretStr("k")).build_input(plan.request, "data:,")
    from brandforge.blocks.providers.http import decode_data_uri

    assert decode_data_uri(inputs["control_image"]) == written.read_bytes() and inputs["controlnet_conditioning_scale"] == 0.7


def test_control_reaches_fal_flux_general_as_controlnets(estimators, source, tmp_path):
    from tests.fakes import fal as fake
    from tests.fakes.base import Knobs, serve

    request = GenerationRequest(source_image=f"file://{source}", prompt="a red mug", negative_prompt="", seed=7,
                                control=ControlSpec(kind="pose", scale=0.6))
    request = with_control_map(request, source.parent, {"pose": estimators["pose"]})
    f = fake.FakeFal(Knobs(latency_s=0.05))
    with serve(f):
        block = FalProvider(base_url=f.url, api_key=fake.KEY, model=FLUX_GENERAL, request_timeout_s=2.0,
                            job_dir=str(tmp_path / "jobs"), controlnet_paths={"pose": "acme/flux-controlnet-pose"})
        _, images, _ = asyncio.run(run_generation(request, block, poll_every=0.05, deadline_s=20, use_limits=False))
        assert len(images) == 1
        sent = f.requests[-1]["body"]["controlnets"]
        assert [{k: v for k, v in cn.items() if k != "image_url"} for cn in sent] == [
            {"path": "acme/flux-controlnet-pose", "conditioning_scale": 0.6}]
        assert f.control_images == [(source.parent / f"control-pose-{request.control.map_sha256[:16]}.png").read_bytes()]
        # The fake holds fal's shape: a ControlNet without its image is a 422, which the block reports as refused.
        bad = block.model_copy(update={"extra_input": {"controlnets": [{"path": "x", "scale": 1}]}})
        with pytest.raises(Rejected, match="image_url"):
            asyncio.run(run_generation(request, bad, poll_every=0.05, deadline_s=20, use_limits=False))


def test_fal_refuses_control_it_cannot_send(demo_profile):
    request = Recipe(name="r", control=ControlSpec(kind="depth")).generation_request(source_image="file:///x.png", prompt="p")
    no_net = FalProvider(api_key=SecretStr("k"), model=FLUX_GENERAL, controlnet_paths={"edges": "acme/canny"})
    with pytest.raises(Rejected, match=r"controlnet_paths\.depth names no ControlNet"):
        no_net.check_request(request)
    rules = [{"name": "pose", "provider": "fal", "control": {"kind": "pose", "image": "https://example.com/pose.png"}}]
    with pytest.raises(ValidationError, match=r"routing rule pose: routes pose control to provider 'fal' \(fal\), but fal takes"):
        with_rules(demo_profile, rules)
    base = with_rules(demo_profile, [])
    data = {name: getattr(base, name) for name in ClientProfile.model_fields}
    data.update(providers={**base.providers, "fal": FalProvider(api_key=SecretStr("k"), model=FLUX_GENERAL,
                                                                 controlnet_paths={"pose": "acme/flux-controlnet-pose"})},
                routing=[RoutingRule.model_validate(r) for r in rules])
    profile = ClientProfile(**data)  # a given reference image needs no estimator, only the ControlNet
    assert profile.routing[0].control.image == "https://example.com/pose.png"


def test_the_diffusers_block_takes_local_lora_files_at_profile_check(demo_profile, tmp_path):
    from brandforge.blocks.providers.diffusers_local import DiffusersProvider

    base = with_rules(demo_profile, [])
    data = {name: getattr(base, name) for name in ClientProfile.model_fields}
    data["providers"] = {**base.providers, "local-sd": DiffusersProvider(model_path=str(tmp_path / "sd15"), pipeline="sd15")}
    local = {"name": "brand", "provider": "local-sd", "loras": [{"weights": str(tmp_path / "brand.safetensors"), "scale": 0.8}]}
    profile = ClientProfile(**{**data, "routing": [RoutingRule.model_validate(local)]})
    assert profile.routing[0].loras[0].scale == 0.8
    remote = {**local, "loras": [{"weights": "https://example.com/brand.safetensors"}]}
    with pytest.raises(ValidationError, match=r"routing rule brand: routes LoRA 'https://example.com/brand.safetensors' to "
                                              r"provider 'local-sd' \(diffusers\), but diffusers loads local LoRA files only"):
        ClientProfile(**{**data, "routing": [RoutingRule.model_validate(remote)]})
    control = {"name": "edges", "provider": "local-sd", "control": {"kind": "edges"}}
    with pytest.raises(ValidationError, match=r"routing rule edges: routes structure control to provider 'local-sd' "
                                              r"\(diffusers\), which has no ControlNet input"):
        ClientProfile(**{**data, "routing": [RoutingRule.model_validate(control)]})
