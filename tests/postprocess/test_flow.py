"""The chain inside a real Prefect run: each step its own retried task, extra formats reach the gallery."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image
from prefect import flow

from brandforge.models import AssetRef, StepSpec
from brandforge.tasks.postprocess.chain import ChainContext, postprocess_candidate
from tests.conftest import DEMO_CATALOG
from tests.postprocess.images import subject_scene

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_transient_refiner_failure_is_retried_by_the_step_task(tmp_path, replicate, fake):
    image, _ = subject_scene((64, 36))
    raw = tmp_path / "raw.png"
    image.save(raw)
    fake.state.fail_next.append((503, {}))  # the first prediction fails; the step task's retry succeeds

    @flow
    def one() -> object:
        ctx = ChainContext(seed=1, refiner=replicate)
        chain = [StepSpec(step="upscale", params={"method": "provider", "scale": 4}), StepSpec(step="encode", params={"format": "png"})]
        return postprocess_candidate(str(raw), chain, ctx, str(tmp_path / "out"))

    result = one()
    assert Image.open(result.path).size == (256, 144)
    assert [c for c in fake.state.calls if c[0] == "replicate"] == [("replicate", "nightmareai/real-esrgan")]  # 1 success after the 503


def test_extra_formats_reach_the_gallery(demo_profile, demo_state, tmp_path):
    from brandforge.flows.process_asset import process_asset

    catalog = tmp_path / "catalog"
    catalog.mkdir()
    shutil.copy(DEMO_CATALOG / "ceramic-mug.webp", catalog / "ceramic-mug.webp")
    chain = [
        StepSpec(step="reframe", params={"ratios": ["4:5", "9:16", "16:9"]}),
        StepSpec(step="grade", params={"strength": 0.4}),
        StepSpec(step="watermark", params={"anchor": "bottom-right", "scale": 0.2}),
        StepSpec(step="grain", params={"amount": 3}),
        StepSpec(step="encode", params={"format": "jpeg", "quality": 88}),
    ]
    recipes = [r.model_copy(update={"chain": chain}) if r.name == "poster" else r for r in demo_profile.recipes]
    profile = demo_profile.model_copy(update={"recipes": recipes})

    outcome = process_asset(
        AssetRef(client="demo", uri=(catalog / "ceramic-mug.webp").as_uri(), name="ceramic-mug.webp"),
        profile=profile, source_folder=str(catalog), work_dir=str(demo_state / "work"),
    )
    assert outcome.state == "published", outcome.reason
    entry = json.loads(next((demo_state / "gallery" / "demo" / "entries").glob("*.json")).read_text())
    assert set(entry["extras"]) == {"9x16", "16x9"}
    folder = demo_state / "gallery" / "demo"
    main = Image.open(folder / entry["image"])
    assert abs(main.width / main.height - 4 / 5) < 0.01
    for label, name in entry["extras"].items():
        w, h = (int(v) for v in label.split("x"))
        with Image.open(folder / name) as img:
            assert abs(img.width / img.height - w / h) < 0.01


def test_steps_load_saved_blocks_by_name(tmp_path, replicate, fake):
    c2pa = pytest.importorskip("c2pa")  # noqa: F841
    from brandforge.blocks.c2pa_signer import C2paSigner
    from tests.postprocess.ca import make_test_ca

    ca = make_test_ca()
    replicate.save("pp-test-refiner", overwrite=True)
    C2paSigner(certificate_chain=ca.chain_pem, private_key=ca.key_pem, trust_anchors=ca.root_pem).save("pp-test-signer", overwrite=True)
    image, _ = subject_scene((64, 36))
    raw = tmp_path / "raw.png"
    image.save(raw)
    chain = [
        StepSpec(step="upscale", params={"method": "provider", "scale": 2, "refiner": "brandforge-replicate-refiner/pp-test-refiner"}),
        StepSpec(step="encode", params={"format": "jpeg", "c2pa": True, "c2pa_signer": "brandforge-c2pa-signer/pp-test-signer"}),
    ]
    result = postprocess_candidate.fn(str(raw), chain, ChainContext(seed=1), str(tmp_path / "named"))
    assert Image.open(result.path).size == (128, 72)
    assert C2paSigner.load("pp-test-signer").read_manifest(result.path)["validation_state"] == "Trusted"
    from brandforge.models import InvalidInput

    with pytest.raises(InvalidInput, match="could not be loaded"):
        postprocess_candidate.fn(
            str(raw), [StepSpec(step="faces", params={"refiner": "brandforge-replicate-refiner/missing"})], ChainContext(seed=1), str(tmp_path / "x")
        )


def test_client_profile_round_trips_its_refiner_and_signer(demo_profile, replicate):
    from brandforge.blocks.client_profile import ClientProfile
    from brandforge.blocks.refiners import ReplicateRefiner

    profile = demo_profile.model_copy(update={"client_id": "pp-refiner-client", "refiner": replicate})
    profile.save("pp-refiner-client", overwrite=True)
    loaded = ClientProfile.load("pp-refiner-client")
    assert isinstance(loaded.refiner, ReplicateRefiner)
    assert loaded.refiner.api_key.get_secret_value() == replicate.api_key.get_secret_value()
    assert loaded.c2pa_signer is None
