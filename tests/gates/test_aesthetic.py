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
from tests.gates.test_microbatch import call_in_threads  # noqa: E402

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


# ---------------------------------------------------------------- shared batches, int8, one model per process


class PassCounter:
    """Counts forward passes of the image encoder (a forward hook); `fail` makes the next passes raise."""

    def __init__(self, model) -> None:
        self.passes: list[int] = []
        self.fail: Exception | None = None
        self._pre = model.visual.register_forward_pre_hook(self._before)

    def _before(self, module, args):
        self.passes.append(args[0].shape[0])
        if self.fail is not None:
            raise self.fail

    def remove(self) -> None:
        self._pre.remove()


def score_in_threads(block: AestheticModel, requests: list[list]) -> list:
    """Each request scored by `block.score` from its own thread, all started together; exceptions are returned."""
    return call_in_threads(block.score, requests)


def test_concurrent_assets_are_scored_in_one_forward_pass(tiny_files):
    """Four assets' threads (1-2 candidates each) share one pass of batch_size 6; each gets its own scores."""
    ims = images(6)
    alone = AestheticModel(model_name=TINY, pretrained=tiny_files["clip"], head_path=tiny_files["head"], shared_batches=False)
    expected = alone.score(ims)
    shared = alone.model_copy(update={"shared_batches": True, "batch_size": 6, "batch_wait_ms": 30_000})
    counter = PassCounter(shared.load_model()[0])
    try:
        out = score_in_threads(shared, [ims[0:1], ims[1:3], ims[3:4], ims[4:6]])
    finally:
        counter.remove()
    assert counter.passes == [6]
    assert out[0] + out[1] + out[2] + out[3] == pytest.approx(expected, abs=1e-5)


def test_a_lone_asset_is_scored_when_the_batch_wait_runs_out(tiny_files):
    lone = AestheticModel(model_name=TINY, pretrained=tiny_files["clip"], head_path=tiny_files["head"], batch_size=32, batch_wait_ms=20)
    counter = PassCounter(lone.load_model()[0])
    try:
        out = score_in_threads(lone, [images(2)])
    finally:
        counter.remove()
    assert counter.passes == [2] and len(out[0]) == 2 and all(isinstance(s, float) for s in out[0])


def test_a_failed_forward_pass_reaches_every_waiting_asset(tiny_files):
    block = AestheticModel(model_name=TINY, pretrained=tiny_files["clip"], head_path=tiny_files["head"], batch_size=3, batch_wait_ms=30_000)
    counter = PassCounter(block.load_model()[0])
    counter.fail = RuntimeError("encoder exploded")
    try:
        out = score_in_threads(block, [images(1), images(1), images(1)])
        assert all(isinstance(o, RuntimeError) and "encoder exploded" in str(o) for o in out)
        assert counter.passes == [3]
        counter.fail = None
        assert [len(o) for o in score_in_threads(block, [images(1), images(2)])] == [1, 2]
    finally:
        counter.remove()


def test_the_model_is_built_once_when_many_assets_ask_at_once(tiny_files, tmp_path, monkeypatch):
    """Eight threads score with a configuration not loaded yet: one build, one model object for all."""
    builds = []
    real = open_clip.create_model_and_transforms

    def counting(*args, **kwargs):
        builds.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", counting)
    # cache_dir is part of the configuration key but unused with a checkpoint file: a fresh key, same weights.
    block = AestheticModel(model_name=TINY, pretrained=tiny_files["clip"], head_path=tiny_files["head"], cache_dir=str(tmp_path))
    out = score_in_threads(block, [images(1)] * 8)
    assert builds == [TINY]
    assert all(len(o) == 1 for o in out)
    assert block.model_copy(update={"batch_size": 3, "shared_batches": False}).load_model()[0] is block.load_model()[0]
    assert block.model_copy(update={"precision": "int8"}).load_model()[0] is not block.load_model()[0]


def test_int8_scores_agree_with_fp32_within_the_tolerance(tiny_files, tmp_path):
    """The encoder's MLP layers are int8; scores on the 1-10 scale stay within 0.05 of fp32.

    The random head is rescaled so that, over these images (photos, a poster,
    a blank), fp32 scores span 4.0-6.5: the spread the real predictor puts
    between a blank and a good photo, so the head's gain is realistic.
    """
    from torch import nn

    fp32 = AestheticModel(model_name=TINY, pretrained=tiny_files["clip"], head_path=tiny_files["head"], batch_size=8)
    ims = images(8)
    head = fp32.load_model()[2]
    raw = torch.tensor(fp32.score(ims))
    gain = 2.5 / float(raw.max() - raw.min())
    state = {k: v.clone() for k, v in head.state_dict().items()}
    state["layers.7.weight"] *= gain
    state["layers.7.bias"] = state["layers.7.bias"] * gain + (4.0 - float(raw.min()) * gain)
    scaled = tmp_path / "head-1-10.pth"
    torch.save(state, scaled)
    fp32 = fp32.model_copy(update={"head_path": str(scaled)})
    int8 = fp32.model_copy(update={"precision": "int8"})
    visual = int8.load_model()[0].visual
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    for block in visual.transformer.resblocks:  # the tiny model has 2
        assert isinstance(block.mlp.c_fc, DynamicLinear) and isinstance(block.mlp.c_proj, DynamicLinear)
        assert isinstance(block.attn, nn.MultiheadAttention) and not isinstance(block.attn.out_proj, DynamicLinear)
    expected, got = fp32.score(ims), int8.score(ims)
    assert min(expected) == pytest.approx(4.0, abs=1e-3) and max(expected) == pytest.approx(6.5, abs=1e-3)
    assert max(abs(a - b) for a, b in zip(expected, got)) <= 0.05
    assert got != expected  # it really ran quantized


def test_int8_is_cpu_only():
    with pytest.raises(ValueError, match="CPU only"):
        AestheticModel(precision="int8", device="cuda")
