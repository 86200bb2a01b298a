"""Encode: every format reads back its parameters, DigitalSourceType and sRGB; C2PA manifests validate."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageCms

from brandforge.blocks.c2pa_signer import GENERATION_ASSERTION, C2paSigner
from brandforge.models import InvalidInput, StepSpec
from brandforge.tasks.postprocess.chain import ChainContext, postprocess_candidate
from brandforge.tasks.postprocess.encode import (
    DIGITAL_SOURCE_TYPE,
    EncodeParams,
    encode_image,
    read_embedded_params,
    read_xmp,
    to_srgb,
)
from tests.postprocess.ca import make_test_ca
from tests.postprocess.images import p3_icc_profile, subject_scene

PARAMS = {"prompt": 'a "red" ball <studio> & co', "seed": 42, "strength": 0.6, "model": "local"}


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif"])
def test_metadata_reads_back(tmp_path, fmt):
    image, _ = subject_scene((160, 90))
    path = encode_image(image, tmp_path / "out", fmt, EncodeParams(format=fmt, quality=85), PARAMS)
    assert path.suffix == {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "avif": ".avif"}[fmt]
    assert read_embedded_params(path) == PARAMS
    xmp = read_xmp(path)
    assert f'Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"' in xmp
    blob = re.search(r'brandforge:params="([^"]*)"', xmp).group(1)
    unescaped = blob.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert json.loads(unescaped) == PARAMS
    with Image.open(path) as img:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(profile)
        got = np.asarray(img.convert("RGB")).astype(int)
    tolerance = 0 if fmt == "png" else 40
    assert np.abs(got - np.asarray(image).astype(int)).mean() <= max(tolerance / 8, 0)


def test_quality_setting_changes_size(tmp_path):
    image, _ = subject_scene((320, 180))
    small = encode_image(image, tmp_path / "q30", "jpeg", EncodeParams(quality=30), {})
    large = encode_image(image, tmp_path / "q95", "jpeg", EncodeParams(quality=95), {})
    assert small.stat().st_size < large.stat().st_size
    lossless = encode_image(image, tmp_path / "ll", "webp", EncodeParams(format="webp", lossless=True), {})
    assert np.array_equal(np.asarray(Image.open(lossless).convert("RGB")), np.asarray(image))


def test_wide_gamut_input_is_converted_to_srgb():
    srgb = Image.new("RGB", (8, 8), (180, 120, 100))
    srgb.info["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert to_srgb(srgb).getpixel((0, 0)) == (180, 120, 100)  # already sRGB: untouched
    p3 = Image.new("RGB", (8, 8), (180, 120, 100))
    p3.info["icc_profile"] = p3_icc_profile()
    r, g, b = to_srgb(p3).getpixel((0, 0))
    # The same numbers mean a more saturated colour in P3; in sRGB they must spread further apart.
    assert r - b > 180 - 100 + 10
    broken = Image.new("RGB", (8, 8), (1, 2, 3))
    broken.info["icc_profile"] = b"not a profile"
    assert to_srgb(broken).getpixel((0, 0)) == (1, 2, 3)


def test_encode_param_errors():
    with pytest.raises(ValueError, match="lossless is only for format 'webp'"):
        EncodeParams(format="jpeg", lossless=True)
    with pytest.raises(ValueError, match="set c2pa: true"):
        EncodeParams(c2pa_signer="brandforge-c2pa-signer/x")
    with pytest.raises(ValueError, match="format"):
        EncodeParams(format="gif")


# --------------------------------------------------------------------------- C2PA


@pytest.fixture(scope="module")
def ca():
    pytest.importorskip("c2pa")
    return make_test_ca()


@pytest.fixture
def signer(ca) -> C2paSigner:
    return C2paSigner(certificate_chain=ca.chain_pem, private_key=ca.key_pem, trust_anchors=ca.root_pem)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif"])
def test_c2pa_manifest_is_signed_and_validates(tmp_path, signer, fmt):
    image, _ = subject_scene((160, 90))
    raw = tmp_path / "raw.png"
    image.save(raw)
    ctx = ChainContext(seed=1, metadata=PARAMS, c2pa_signer=signer)
    chain = [StepSpec(step="grain", params={"amount": 3}), StepSpec(step="encode", params={"format": fmt, "c2pa": True})]
    result = postprocess_candidate.fn(str(raw), chain, ctx, str(tmp_path / "signed"))
    store = signer.read_manifest(result.path)
    assert store["validation_state"] == "Trusted"
    assert store["validation_results"]["activeManifest"]["failure"] == []
    manifest = store["manifests"][store["active_manifest"]]
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    actions = assertions.get("c2pa.actions.v2") or assertions["c2pa.actions"]
    assert actions["actions"][0]["digitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert assertions[GENERATION_ASSERTION]["prompt"] == PARAMS["prompt"]
    # The plain metadata is still there beside the manifest.
    assert read_embedded_params(result.path)["seed"] == 42
    assert not list(tmp_path.glob(".unsigned-*"))


def test_tampered_file_fails_validation(tmp_path, signer):
    image, _ = subject_scene((160, 90))
    path = encode_image(image, tmp_path / "s", "png", EncodeParams(format="png"), PARAMS, signer=signer)
    data = bytearray(path.read_bytes())
    # Flip bytes inside the image data (IDAT), not the manifest.
    idat = data.index(b"IDAT")
    data[idat + 40 : idat + 44] = b"\x00\x01\x02\x03"
    tampered = tmp_path / "tampered.png"
    tampered.write_bytes(bytes(data))
    store = signer.read_manifest(tampered)
    assert store.get("validation_state") != "Trusted"
    codes = [f["code"] for f in store["validation_results"]["activeManifest"]["failure"]]
    assert any("dataHash.mismatch" in c for c in codes)


def test_untrusted_root_is_reported(tmp_path, signer, ca):
    image, _ = subject_scene((64, 64))
    path = encode_image(image, tmp_path / "s", "jpeg", EncodeParams(), PARAMS, signer=signer)
    stranger = signer.model_copy(update={"trust_anchors": None})
    assert stranger.read_manifest(path)["validation_state"] == "Valid"  # intact, but not from a root we trust


def test_bad_key_is_a_clear_error(tmp_path, ca):
    other = make_test_ca()
    wrong = C2paSigner(certificate_chain=ca.chain_pem, private_key=other.key_pem)
    image, _ = subject_scene((64, 64))
    with pytest.raises(InvalidInput, match="C2PA signing failed"):
        encode_image(image, tmp_path / "s", "jpeg", EncodeParams(), PARAMS, signer=wrong)


def test_embedded_icc_profile_is_the_same_bytes_in_every_process():
    """lcms stamps the current second into a new profile: two processes encoding the same pixels a
    second apart wrote different files, so `brandforge replay` reported different bytes."""
    code = "from brandforge.tasks.postprocess.encode import srgb_icc; print(srgb_icc().hex())"
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    time.sleep(1.1)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert first == second and len(first) > 200
