"""Face restoration: the refiner is called only when a face is found, and its result comes back at size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from brandforge.models import StepSpec
from brandforge.tasks.postprocess.chain import ChainContext, postprocess_candidate
from brandforge.tasks.postprocess.faces import FaceRestoreParams, detect_faces
from tests.postprocess.images import subject_scene

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())  # a real photograph with one face


def test_detector_finds_the_face_and_nothing_in_a_still_life(portrait):
    faces = detect_faces(portrait)
    assert len(faces) == 1
    left, top, w, h = faces[0]
    assert 150 < left + w / 2 < 260 and 80 < top + h / 2 < 150  # her face, not the suit or the helmet
    big = portrait.resize((1024, 1024))
    (bl, bt, bw, bh), = detect_faces(big)
    assert abs(bl - 2 * left) < 30 and abs(bw - 2 * w) < 30  # reported in the image's own pixels
    scene, _ = subject_scene((640, 360))
    assert detect_faces(scene) == []
    assert detect_faces(Image.fromarray(skimage_data.coffee())) == []


def run(tmp_path, image, ctx, **params):
    raw = tmp_path / "raw.png"
    image.save(raw)
    chain = [StepSpec(step="faces", params=params), StepSpec(step="encode", params={"format": "png"})]
    return postprocess_candidate.fn(str(raw), chain, ctx, str(tmp_path / "out"))


def test_faces_restored_through_the_refiner(tmp_path, portrait, replicate, fake):
    result = run(tmp_path, portrait, ChainContext(seed=1, refiner=replicate), model="codeformer", fidelity=0.3)
    out = Image.open(result.path).convert("RGB")
    assert out.size == portrait.size
    assert np.array_equal(np.asarray(out), np.asarray(ImageOps.invert(portrait)))  # the fake's "restoration"
    assert fake.state.calls == [("replicate", "sczhou/codeformer")]
    assert result.report["main"][0] == {"step": "faces", "faces": 1, "restored": True, "model": "codeformer"}


def test_no_face_no_call(tmp_path, replicate, fake):
    scene, _ = subject_scene((320, 180))
    result = run(tmp_path, scene, ChainContext(seed=1, refiner=replicate))
    assert fake.state.calls == []
    assert np.array_equal(np.asarray(Image.open(result.path).convert("RGB")), np.asarray(scene))
    assert result.report["main"][0]["faces"] == 0


def test_params_are_checked():
    with pytest.raises(ValueError, match="model"):
        FaceRestoreParams(model="restoreformer")
    with pytest.raises(ValueError, match="fidelity"):
        FaceRestoreParams(fidelity=2)


def test_a_refiner_without_face_models_is_refused_before_any_image(tmp_path, stability, fake):
    from brandforge.models import InvalidInput

    with pytest.raises(InvalidInput, match="needs a refiner that offers 'faces'; StabilityRefiner offers"):
        run(tmp_path, Image.new("RGB", (64, 64)), ChainContext(seed=1, refiner=stability))
    assert fake.state.calls == []
