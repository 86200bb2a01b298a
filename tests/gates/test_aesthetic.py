"""Aesthetic gate plumbing on a tiny open_clip model and a random head the tests build.

No real weights and no network: the tests check the shapes, the L2
normalisation, batching, the per-process cache, the threshold logic and the
missing-weights path, not the quality of the scores.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from brandforge.blocks.aesthetic import AestheticModel, AestheticUnavailable, build_head  # noqa: E402
from brandforge.models import GateThresholds  # noqa: E402
from brandforge.tasks.gates.aesthetic import score_aesthetic  # noqa: E402
from tests.gates.images import blank, demo_photo, on_palette_poster  # noqa: E402

TINY = "BrandforgeTiny-test"
TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A tiny CLIP checkpoint and a random MLP head on disk, as a real deployment would have them."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    cfg = folder / f"{TINY}.json"
    cfg.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    clip_path = folder / "tiny-clip.pt"
    torch.save(model.state_dict(), clip_path)
    head_path = folder / "head-mlp.pth"
    torch.save(build_head("mlp-l14", 64).state_dict(), head_path)
    linear_path = folder / "head-linear-512.pth"
    torch.save(build_head("linear-b32", 512).state_dict(), linear_path)
    return {"clip": str(clip_path), "head": str(head_path), "linear512": str(linear_path), "folder": folder}


@pytest.fixture
def tiny(tiny_files) -> AestheticModel:
    return AestheticModel(model_name=TINY, pretrained=tiny_files["clip"], head_path=tiny_files["head"], batch_size=2)


def images(n: int):
    base = [demo_photo("coffee-cup.jpg", (96, 80)), demo_photo("chelsea-cat.png", (80, 96)), on_palette_poster((64, 64)), blank((70, 70))]
    return [base[i % len(base)] for i in range(n)]


def test_mlp_head_has_the_improved_predictor_layout():
    head = build_head("mlp-l14", 768)
    keys = [k for k in head.state_dict()]
    assert keys == [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]
    assert head.state_dict()["layers.0.weight"].shape == (1024, 768)
    assert head.state_dict()["layers.7.weight"].shape == (1, 16)
    assert build_head("linear-b32", 512).state_dict()["weight"].shape == (1, 512)
    with pytest.raises(ValueError, match="head_kind must be one of"):
        build_head("relu-l14", 768)


def test_embeddings_are_l2_normalised_with_the_model_width(tiny):
    emb = tiny.embed(images(3))
    assert emb.shape == (3, 64)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_scores_equal_the_head_on_normalised_embeddings(tiny):
    ims = images(3)
    model, preprocess, head = tiny.load_model()
    with torch.inference_mode():
        emb = model.encode_image(torch.stack([preprocess(i) for i in ims]))
        expected = head(emb / emb.norm(dim=-1, keepdim=True)).reshape(-1).tolist()
    assert tiny.score(ims) == pytest.approx(expected, abs=1e-5)


def test_batching_does_not_change_scores(tiny, tiny_files):
    ims = images(5)
    one_batch = AestheticModel(model_name=TINY, pretrained=tiny_files["clip"], head_path=tiny_files["head"], batch_size=8)
    assert len(tiny.score(ims)) == 5
    assert tiny.score(ims) == pytest.approx(one_batch.score(ims), abs=1e-5)
    assert tiny.score([]) == []


def test_model_is_loaded_once_per_process_per_configuration(tiny, tiny_files):
    first = tiny.load_model()
    again = AestheticModel(model_name=TINY, pretrained=tiny_files["clip"], head_path=tiny_files["head"], batch_size=4).load_model()
    assert again[0] is first[0] and again[2] is first[2]


def test_checkpoint_weights_are_really_loaded(tiny, tiny_files):
    """The block loads the saved checkpoint, not a fresh random init."""
    saved = torch.load(tiny_files["clip"], weights_only=True)
    model = tiny.load_model()[0]
    name, tensor = next(iter(model.visual.state_dict().items()))
    assert torch.equal(tensor, saved[f"visual.{name}"])


def test_threshold_logic_on_the_score_scale(tiny):
    ims = images(4)
    raw = tiny.score(ims)
    cut = sorted(raw)[1] + 1e-6  # two pass, two fail
    verdicts = score_aesthetic(ims, tiny, GateThresholds(min_aesthetic=cut))
    assert [v.passed for v in verdicts] == [s >= cut for s in raw]
    assert sum(v.passed for v in verdicts) == 2
    failed = next(v for v in verdicts if not v.passed)
    assert failed.gate == "aesthetic" and failed.limit == cut and "aesthetic score" in failed.detail


def test_no_aesthetic_model_leaves_the_gate_out():
    assert score_aesthetic(images(2), None, GateThresholds()) is None


def test_missing_head_fails_or_skips_as_the_profile_says(tiny_files, tmp_path):
    missing = str(tmp_path / "nope.pth")
    fail = AestheticModel(model_name=TINY, pretrained=tiny_files["clip"], head_path=missing, on_missing_weights="fail")
    verdicts = score_aesthetic(images(2), fail, GateThresholds())
    assert [v.passed for v in verdicts] == [False, False]
    assert verdicts[0].score is None and "head_path" in verdicts[0].detail and missing in verdicts[0].detail
    skip = fail.model_copy(update={"on_missing_weights": "skip"})
    verdicts = score_aesthetic(images(2), skip, GateThresholds())
    assert all(v.passed and v.score is None and v.detail.startswith("skipped") for v in verdicts)


def test_pretrained_tag_not_in_the_cache_is_missing_without_downloading(tiny_files, tmp_path):
    model = AestheticModel(model_name="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path / "hub"),
                           head_path=tiny_files["linear512"], head_kind="linear-b32")
    with pytest.raises(AestheticUnavailable, match="never downloads"):
        model.resolve_weights()
    with pytest.raises(AestheticUnavailable, match="cache_dir"):
        model.score(images(1))


def test_head_that_does_not_fit_the_model_is_a_clear_error(tiny_files):
    wrong = AestheticModel(model_name=TINY, pretrained=tiny_files["clip"], head_path=tiny_files["linear512"], head_kind="linear-b32")
    with pytest.raises(AestheticUnavailable, match="do not fit head_kind='linear-b32'"):
        wrong.load_model()


def test_unset_weights_name_the_field():
    with pytest.raises(AestheticUnavailable, match="head_path is not set"):
        AestheticModel().resolve_weights()


def test_profile_with_an_aesthetic_model_scores_and_ranks_by_it(tiny, demo_profile, tmp_path):
    from brandforge.models import Candidate
    from brandforge.tasks.gates.decide import score_candidates

    ims = [demo_photo("coffee-cup.jpg", (512, 384)), demo_photo("rocket-launch.jpg", (512, 384)), demo_photo("chelsea-cat.png", (512, 384))]
    expected = tiny.score(ims)
    candidates = []
    for i, im in enumerate(ims):
        path = tmp_path / f"final-{i}.png"
        im.save(path)
        candidates.append(Candidate(index=i, path=str(path), raw_path=str(path)))
    profile = demo_profile.model_copy(update={"aesthetic": tiny, "gates": GateThresholds(min_aesthetic=min(expected) - 1)})
    decision = score_candidates.fn(candidates, profile)
    recorded = [next(s.score for s in c.scores if s.gate == "aesthetic") for c in decision.candidates]
    assert recorded == pytest.approx(expected, abs=1e-3)
    assert decision.outcome == "publish" and decision.chosen.index == max(range(3), key=lambda i: expected[i])


@pytest.mark.usefixtures("prefect_server")
def test_aesthetic_block_saves_and_loads_from_prefect(tiny):
    tiny.save("gates-tiny-aesthetic", overwrite=True)
    loaded = AestheticModel.load("gates-tiny-aesthetic")
    assert loaded.model_name == TINY and loaded.head_path == tiny.head_path
    assert loaded.score(images(2)) == pytest.approx(tiny.score(images(2)), abs=1e-5)
