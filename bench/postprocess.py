"""Benchmark: the post-processing steps and the whole local chain, beside plain Pillow.

    python bench/postprocess.py              # 1024² and 2048², 7 and 5 runs
    python bench/postprocess.py --runs 11 --sizes 1024

For each input size, every step runs on the same photo (the demo cat, resized)
and the median of several runs is printed beside the nearest plain-Pillow
operation (a naive full-image alpha composite, a centre crop, ImageEnhance,
Pillow's unseeded noise, a full-size blur …) and their ratio. Then the whole
local chain — watermark, 2× Lanczos upscale, one reframe, grade, grain, JPEG
encode with metadata — against the same six operations done naively in
Pillow. Pinned to one CPU core, numpy/BLAS single-threaded, so the figures
speak for one worker. The goal: the local chain on 1024² under 300 ms.
"""

from __future__ import annotations

import os

# Before numpy is imported: one thread for every math library.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from PIL import Image, ImageChops, ImageEnhance, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brandforge.models import StepSpec  # noqa: E402
from brandforge.tasks.postprocess.chain import ChainContext, apply_step, iter_chain, prepare_chain  # noqa: E402
from brandforge.tasks.postprocess.encode import EncodeParams, encode_image  # noqa: E402

PALETTE = ("#14213d", "#e8a838", "#fcf6ec", "#2b6f9e", "#c8553d")
LOGO = ROOT / "demo" / "logo.png"
PHOTO = ROOT / "demo" / "catalog" / "chelsea-cat.png"

LOCAL_CHAIN = [
    StepSpec(step="watermark", params={"anchor": "bottom-right", "scale": 0.2, "opacity": 0.9}),
    StepSpec(step="upscale", params={"scale": 2}),
    StepSpec(step="reframe", params={"ratios": ["4:5"]}),
    StepSpec(step="grade", params={"strength": 0.5}),
    StepSpec(step="grain", params={"amount": 5}),
    StepSpec(step="encode", params={"format": "jpeg", "quality": 90}),
]

# Each step alone: (name, params) → a plain-Pillow stand-in doing the nearest comparable work.
STEP_CASES: list[tuple[str, dict]] = [
    ("watermark", {"scale": 0.2, "opacity": 0.9}),
    ("upscale", {"scale": 2}),
    ("reframe", {"ratios": ["4:5"]}),
    ("reframe", {"ratios": ["16:9"], "mode": "extend", "fill": "blur"}),
    ("grade", {"strength": 0.5}),
    ("grain", {"amount": 5}),
    ("vignette", {"strength": 0.3}),
    ("soft_light", {"amount": 0.3}),
    ("lens_distortion", {"k": 0.03}),
]


def photo(side: int) -> Image.Image:
    with Image.open(PHOTO) as img:
        return img.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm caches (LUTs, fonts, logo) as a long-running worker has them
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def plain_watermark(image: Image.Image, logo: Image.Image) -> Image.Image:
    mark = logo.resize((round(image.width * 0.2), round(logo.height * image.width * 0.2 / logo.width)), Image.Resampling.LANCZOS)
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    layer.paste(mark, (image.width - mark.width - 30, image.height - mark.height - 30))
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def plain_centre_crop(image: Image.Image, rw: int, rh: int) -> Image.Image:
    w, h = image.size
    cw = min(w, round(h * rw / rh))
    ch = min(h, round(w * rh / rw))
    return image.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def plain_pad(image: Image.Image) -> Image.Image:
    w, h = image.size
    canvas = Image.new("RGB", (round(h * 16 / 9), h), (0, 0, 0))
    canvas.paste(image, ((canvas.width - w) // 2, 0))
    return canvas


def plain_grain(image: Image.Image) -> Image.Image:
    noise = Image.effect_noise(image.size, 5).convert("RGB")
    return ImageChops.add(image, noise, 1.0, -128)


def plain_vignette(image: Image.Image) -> Image.Image:
    mask = ImageChops.invert(Image.radial_gradient("L")).resize(image.size, Image.Resampling.BILINEAR)
    return Image.composite(image, Image.new("RGB", image.size), mask)


def plain_soft_light(image: Image.Image) -> Image.Image:
    glow = image.filter(ImageFilter.GaussianBlur(image.width * 0.02))
    return Image.blend(image, ImageChops.soft_light(image, glow), 0.3)


def baselines(logo: Image.Image) -> dict[int, Callable[[Image.Image], object] | None]:
    return {
        0: lambda im: plain_watermark(im, logo),
        1: lambda im: im.resize((im.width * 2, im.height * 2), Image.Resampling.LANCZOS),
        2: lambda im: plain_centre_crop(im, 4, 5),
        3: plain_pad,
        4: lambda im: ImageEnhance.Color(im).enhance(1.3),
        5: plain_grain,
        6: plain_vignette,
        7: plain_soft_light,
        8: None,  # Pillow has no lens distortion of its own
    }


def plain_chain(image: Image.Image, logo: Image.Image, out: Path) -> None:
    image = plain_watermark(image, logo)
    image = image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
    image = plain_centre_crop(image, 4, 5)
    image = ImageEnhance.Color(image).enhance(1.3)
    image = plain_grain(image)
    image.save(out, format="JPEG", quality=90)


def bench_size(side: int, runs: int, workdir: Path) -> None:
    image = photo(side)
    logo = Image.open(LOGO).convert("RGBA")
    ctx = ChainContext(seed=7, palette=PALETTE, logo_path=str(LOGO), metadata={"prompt": "bench", "seed": 7})
    plain = baselines(logo)
    print(f"\n{side}×{side} px, median of {runs} runs (ms)")
    print(f"  {'step':<34}{'brandforge':>11}{'plain Pillow':>14}{'ratio':>8}   plain stand-in")
    notes = {
        0: "full-image RGBA alpha_composite",
        1: "resize LANCZOS",
        2: "centre crop",
        3: "pad with black",
        4: "ImageEnhance.Color",
        5: "Image.effect_noise + add (unseeded)",
        6: "radial_gradient mask composite",
        7: "full-size GaussianBlur + soft_light",
        8: "—",
    }
    for i, (name, params) in enumerate(STEP_CASES):
        steps, _ = prepare_chain([StepSpec(step=name, params=params)], ctx)
        (_, p), = steps
        ours = median_ms(lambda: apply_step(name, image, p, ctx), runs)
        label = name + (f" ({params.get('mode', 'crop')} {params['ratios'][0]})" if name == "reframe" else "")
        if plain[i] is None:
            print(f"  {label:<34}{ours:>11.1f}{'—':>14}{'—':>8}   {notes[i]}")
        else:
            base = median_ms(lambda: plain[i](image), runs)
            print(f"  {label:<34}{ours:>11.1f}{base:>14.1f}{ours / base:>8.2f}   {notes[i]}")
    jpeg = workdir / "x"
    ours = median_ms(lambda: encode_image(image, jpeg, "jpeg", EncodeParams(quality=90), {"prompt": "bench", "seed": 7}), runs)
    base = median_ms(lambda: image.save(workdir / "plain.jpg", format="JPEG", quality=90), runs)
    print(f"  {'encode (jpeg q90 + metadata)':<34}{ours:>11.1f}{base:>14.1f}{ours / base:>8.2f}   save JPEG q90, no metadata")

    def whole() -> None:
        steps, encode = prepare_chain(LOCAL_CHAIN, ctx)
        for out in iter_chain(image, steps, ctx):
            encode_image(out.image, workdir / "chain", "jpeg", encode, {**ctx.metadata, "postprocess": out.notes})

    ours = median_ms(whole, runs)
    base = median_ms(lambda: plain_chain(image, logo, workdir / "plain-chain.jpg"), runs)
    goal = "  (goal < 300 ms)" if side == 1024 else ""
    print(f"  {'WHOLE LOCAL CHAIN':<34}{ours:>11.1f}{base:>14.1f}{ours / base:>8.2f}   the same 6 operations, naive{goal}")
    print("    = watermark → 2× Lanczos → smart reframe 4:5 → palette grade → seeded grain → JPEG q90 with metadata")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--runs", type=int, default=0, help="runs per figure (default 7 at ≤1024 px, 5 above)")
    args = parser.parse_args(argv)
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        pinned = "pinned to one core"
    except (AttributeError, OSError):
        pinned = "not pinned (no sched_setaffinity here)"
    print(f"brandforge post-processing benchmark — {pinned}; Pillow {Image.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.sizes:
            bench_size(side, args.runs or (7 if side <= 1024 else 5), Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
