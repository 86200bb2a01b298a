"""LocalEngine honours the contract: styles, strength, seed, batch, size, determinism."""

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from brandforge.blocks.providers.local_engine import LocalEngine
from brandforge.blocks.providers.stylise import choose_style
from brandforge.models import GenerationRequest, Rejected


@pytest.fixture
def source(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:160]
    arr = np.stack([xx * 1.5, yy * 2, (xx + yy) % 255], axis=-1) + rng.normal(0, 8, (128, 160, 3))
    path = tmp_path / "src.png"
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def run(engine: LocalEngine, **kw) -> list[bytes]:
    async def go():
        handle = await engine.submit(GenerationRequest(**kw))
        status = await engine.status(handle)
        assert status.state.value == "succeeded"
        return await engine.fetch(handle)

    return asyncio.run(go())


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def req(source, **kw):
    return {"source_image": f"file://{source}", "prompt": "photo of a mug", "negative_prompt": "", "seed": 7, **kw}


@pytest.mark.parametrize(
    "prompt,style",
    [
        ("flat poster illustration of a mug", "flat illustration"),
        ("oil painting of a mug", "oil painting"),
        ("soft watercolour of a mug", "watercolour"),
        ("pencil sketch of a mug", "pencil sketch"),
        ("vintage film photograph of a mug", "vintage film"),
        ("studio photo of a mug", "clean"),
    ],
)
def test_prompt_words_choose_the_style(prompt, style):
    assert choose_style(prompt)[0] == style


def test_negative_prompt_excludes_a_style():
    assert choose_style("vintage film sketch", negative_prompt="film")[0] == "pencil sketch"


def test_same_request_gives_byte_identical_output(tmp_path, source):
    a = run(LocalEngine(job_dir=str(tmp_path / "a")), **req(source, prompt="oil painting"))
    b = run(LocalEngine(job_dir=str(tmp_path / "b")), **req(source, prompt="oil painting"))
    assert a == b


def test_seed_changes_the_output(tmp_path, source):
    a = run(LocalEngine(job_dir=str(tmp_path)), **req(source, prompt="vintage film", seed=1))
    b = run(LocalEngine(job_dir=str(tmp_path)), **req(source, prompt="vintage film", seed=2))
    assert a != b


def test_batch_gives_distinct_variants(tmp_path, source):
    out = run(LocalEngine(job_dir=str(tmp_path)), **req(source, prompt="pencil sketch", batch_size=3))
    assert len(out) == 3 and len({bytes(o) for o in out}) == 3


def test_strength_blends_source_and_style(tmp_path, source):
    src = np.asarray(Image.open(source).convert("RGB"), dtype=np.float32)
    engine = LocalEngine(job_dir=str(tmp_path))
    low = pixels(run(engine, **req(source, prompt="pencil sketch", strength=0.1))[0])
    high = pixels(run(engine, **req(source, prompt="pencil sketch", strength=1.0))[0])
    assert np.abs(low - src).mean() < np.abs(high - src).mean() / 3


def test_styles_really_differ(tmp_path, source):
    engine = LocalEngine(job_dir=str(tmp_path))
    outs = [pixels(run(engine, **req(source, prompt=p, strength=1.0))[0]) for p in ("oil painting", "pencil sketch", "vintage film")]
    assert all(np.abs(outs[i] - outs[j]).mean() > 5 for i in range(3) for j in range(i + 1, 3))
    sketch = outs[1]
    assert np.abs(sketch[..., 0] - sketch[..., 1]).max() < 1  # a pencil sketch is grey


def test_flat_illustration_uses_the_brand_palette(tmp_path, source):
    palette = ["#14213d", "#e8a838", "#fcf6ec"]
    out = pixels(run(LocalEngine(job_dir=str(tmp_path), palette=palette), **req(source, prompt="flat illustration", strength=1.0))[0])
    colours = {tuple(int(v) for v in px) for px in out.reshape(-1, 3)}
    assert len(colours) <= len(palette) + 3  # palette + light/dark anchors (+ black edges)


def test_width_height_resize(tmp_path, source):
    out = run(LocalEngine(job_dir=str(tmp_path)), **req(source, width=96, height=64))
    assert Image.open(io.BytesIO(out[0])).size == (96, 64)


def test_unreadable_source_is_rejected(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(Rejected, match="source_image cannot be read"):
        run(LocalEngine(job_dir=str(tmp_path)), **req(bad))
