"""Benchmark: images per second of every quality gate on 1024² images.

    python bench/gates.py                    # cheap gates + aesthetic ViT-B/32 and ViT-L/14
    python bench/gates.py --models none      # cheap gates only
    python bench/gates.py --models b32 --batches 1,8

Cheap gates (numpy/Pillow) are timed one by one and all together
(`tasks.gates.decide.score_image`, what each variant pays). The aesthetic gate
is timed per image at batch sizes 1, 8 and 32 with random weights, which cost
the same as the real ones (nothing is downloaded). Goals: all cheap gates
together under 50 ms per image; ViT-L/14 at no more than 1 s per image batched.
Timings on a shared machine are noisy: say what else was running.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from brandforge.models import GateThresholds  # noqa: E402
from brandforge.tasks.gates import artifacts, brand, duplicates, technical  # noqa: E402
from brandforge.tasks.gates.decide import score_image  # noqa: E402

SIDE = 1024
PALETTE = ["#14213d", "#e8a838", "#fcf6ec", "#2b6f9e", "#c8553d"]
AESTHETIC = {
    "b32": ("ViT-B-32", "linear-b32"),
    "l14": ("ViT-L-14-quickgelu", "mlp-l14"),
}


def test_image(name: str = "coffee-cup.jpg") -> Image.Image:
    with Image.open(ROOT / "demo" / "catalog" / name) as im:
        return im.convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)


def timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls after one warm-up."""
    fn()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def cheap_gates(repeat: int) -> None:
    t = GateThresholds(max_palette_distance=40.0)
    image, source = test_image(), test_image()
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    size = buf.tell()
    published = [f"{i * 2654435761 % 2**64:016x}" for i in range(1000)]  # a client with 1000 published images
    grey = technical.grey_array(image)
    gates = {
        "resolution": lambda: technical.check_resolution(image, t),
        "file_size": lambda: technical.check_file_size(size, t),
        "contrast (blank)": lambda: technical.check_contrast(technical.grey_array(image), t),
        "sharpness": lambda: technical.check_sharpness(technical.grey_array(image), t),
        "exposure": lambda: technical.check_exposure(grey, t),
        "colour_cast": lambda: technical.check_colour_cast(image, t),
        "noise": lambda: artifacts.check_noise(image, t),
        "colour_band": lambda: artifacts.check_colour_band(image, t),
        "alpha_hole": lambda: artifacts.check_alpha_hole([image], t),
        "repetition": lambda: artifacts.check_repetition(image, t),
        "duplicate (phash + 1000 published)": lambda: duplicates.check_duplicate(duplicates.phash(image), published, t),
        "palette": lambda: brand.check_palette(image, PALETTE, t),
        "structure (SSIM to source)": lambda: brand.check_structure(image, source, t),
    }
    print(f"Cheap gates on one {SIDE}x{SIDE} RGB image (median of {repeat}; each alone pays its own downscale,")
    print("score_image makes one reduced copy for all of them):")
    print(f"  {'gate':<36} {'ms/image':>9} {'images/s':>9}")
    for name, fn in gates.items():
        s = timed(fn, repeat)
        print(f"  {name:<36} {s * 1000:9.2f} {1 / s:9.0f}")
    together = timed(lambda: score_image(image, t, file_bytes=size, palette=PALETTE, source=source, published=published), repeat)
    verdict = "meets" if together < 0.050 else "misses"
    print(f"  {'ALL cheap gates (score_image)':<36} {together * 1000:9.2f} {1 / together:9.0f}   {verdict} the 50 ms goal")


def aesthetic(models: list[str], batches: list[int]) -> None:
    try:
        import torch
    except ImportError:
        print("aesthetic: torch/open_clip not installed (pip install 'brandforge[aesthetic]'); skipped")
        return
    from brandforge.blocks.aesthetic import AestheticModel

    print(f"\nAesthetic gate, random weights (same cost as real), {SIDE}² inputs, torch threads {torch.get_num_threads()}:")
    print(f"  {'model':<22} {'batch':>5} {'s/image':>9} {'images/s':>9}")
    image = test_image()
    for key in models:
        name, head = AESTHETIC[key]
        started = time.perf_counter()
        block = AestheticModel(model_name=name, head_kind=head, batch_size=1)
        block.load_model(allow_random=True)
        print(f"  {name:<22} build {time.perf_counter() - started:.1f} s")
        for batch in batches:
            block = AestheticModel(model_name=name, head_kind=head, batch_size=batch)
            images = [image] * batch
            block.score(images[:1], allow_random=True)  # warm-up (the model itself is cached)
            started = time.perf_counter()
            block.score(images, allow_random=True)
            per_image = (time.perf_counter() - started) / batch
            note = ""
            if key == "l14" and batch > 1:
                note = "  meets the 1 s goal" if per_image <= 1.0 else "  misses the 1 s goal"
            print(f"  {name:<22} {batch:>5} {per_image:9.3f} {1 / per_image:9.2f}{note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="b32,l14", help="aesthetic models: b32, l14, both comma-separated, or none")
    parser.add_argument("--batches", default="1,8,32", help="aesthetic batch sizes")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per cheap gate")
    args = parser.parse_args(argv)
    print(f"brandforge gate benchmark — {os.cpu_count()} CPU(s)\n")
    cheap_gates(args.repeat)
    models = [m for m in args.models.split(",") if m and m != "none"]
    unknown = [m for m in models if m not in AESTHETIC]
    if unknown:
        parser.error(f"--models must name {sorted(AESTHETIC)} or none (got {unknown})")
    if models:
        aesthetic(models, [int(b) for b in args.batches.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
