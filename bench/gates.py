"""Benchmark: images per second of every quality gate on 1024² images.

    python bench/gates.py                    # cheap gates + aesthetic ViT-B/32 and ViT-L/14
    python bench/gates.py --models none      # cheap gates only
    python bench/gates.py --models b32 --batches 1,8
    python bench/gates.py --skip-cheap --models l14 --clip-weights clip.pt --head-weights head.pth

Cheap gates (numpy/Pillow) are timed one by one and all together
(`tasks.gates.decide.score_image`, what each variant pays). The aesthetic gate
is timed per image (preprocessing included) at batch sizes 8 and 32 in fp32 and
in int8 (dynamic quantization, `AestheticModel.precision`), with the largest
score difference to fp32 on eight different images (goal: within 0.05), the
embedding difference, and how much an int8 score moves between batch 1 and a
batch of 8. Then N assets' threads score 1-2 images each at once, with and
without the shared micro-batcher. Random weights cost the same as real ones
(nothing is downloaded); give --clip-weights/--head-weights to check the
agreement on real ones. Goals: all cheap gates together under 50 ms per image;
ViT-L/14 at no more than 0.6 s per image at batch 8 on 2 cores.
Timings on a shared machine are noisy: the load average is printed.
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


def timed(fn, repeat: int, warm: bool = True) -> float:
    """Median seconds of `repeat` calls after one warm-up."""
    if warm:
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


def sample_images() -> list[Image.Image]:
    """Eight different inputs for the agreement check: the demo photos, a tinted and a noisy copy, a flat grey."""
    import numpy as np

    photos = [test_image(p.name) for p in sorted((ROOT / "demo" / "catalog").iterdir()) if p.suffix in {".jpg", ".png", ".webp"}]
    tinted = Image.blend(photos[0], Image.new("RGB", photos[0].size, (255, 110, 0)), 0.5)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
    grey = Image.new("RGB", (SIDE, SIDE), (128, 128, 128))
    return (photos + [tinted, noise, grey])[:8]


def rescale_head(head, gain: float, offset: float) -> None:
    """score -> score * gain + offset, by scaling the head's last Linear (in place)."""
    import torch

    last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(gain)
        last.bias.mul_(gain).add_(offset)


def load_block(base, precision: str, random_weights: bool, calibration: tuple[float, float] | None):
    """The block at `precision`, its model loaded; random weights are seeded so fp32 and int8 share them."""
    import torch

    block = base.model_copy(update={"precision": precision})
    if random_weights:
        torch.manual_seed(0)
    started = time.perf_counter()
    _, _, head = block.load_model(allow_random=random_weights)
    if calibration is not None:
        rescale_head(head, *calibration)
    return block, time.perf_counter() - started


def per_image(block, images, reps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per image of `block.score(images)`, preprocessing included, after a one-image warm-up.

    CPU seconds (all threads of this process) are the steadier figure on a
    shared machine: with 2 threads on 2 idle cores, wall ≈ CPU / 2.
    """
    block.score(images[:1], allow_random=True)
    cpu: list[float] = []

    def run() -> None:
        started = time.process_time()
        block.score(images, allow_random=True)
        cpu.append(time.process_time() - started)

    wall = timed(run, reps, warm=False)
    return wall / len(images), statistics.median(cpu) / len(images)


def threads_scoring(block, counts: list[int], image) -> tuple[float, float]:
    """(wall, CPU) seconds per image when len(counts) assets' threads each score counts[i] images, all at once."""
    import threading

    barrier = threading.Barrier(len(counts) + 1)
    errors: list[BaseException] = []

    def asset(n: int) -> None:
        barrier.wait()
        try:
            block.score([image] * n, allow_random=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=asset, args=(n,)) for n in counts]
    for t in threads:
        t.start()
    barrier.wait()
    started, cpu = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return (time.perf_counter() - started) / sum(counts), (time.process_time() - cpu) / sum(counts)


def aesthetic(models: list[str], batches: list[int], precisions: list[str], reps: int, assets: int,
              clip_weights: str | None, head_weights: str | None) -> None:
    try:
        import torch
    except ImportError:
        print("aesthetic: torch/open_clip not installed (pip install 'brandforge[aesthetic]'); skipped")
        return
    from brandforge.blocks.aesthetic import AestheticModel, cpu_has_vnni

    random_weights = not (clip_weights and head_weights)
    if "onnx" in precisions:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("\nONNX Runtime: onnxruntime is not importable in this environment; not measured.")
        else:
            print("\nONNX Runtime: importable, but this benchmark has no ONNX path yet; not measured.")
        precisions = [p for p in precisions if p != "onnx"]
    weights = ("RANDOM weights (nothing is downloaded): the cost is that of real weights; the score agreement is "
               "measured on a random encoder, with the random head rescaled so fp32 scores span 4.0-6.5 over the "
               "sample images (a realistic gain: about what the LAION head puts between a flat grey and a good photo)"
               if random_weights else f"real weights: {clip_weights}, head {head_weights}")
    print(f"\nAesthetic gate, {SIDE}x{SIDE} inputs, torch threads {torch.get_num_threads()}, "
          f"quantized engine {torch.backends.quantized.engine}, VNNI {'yes' if cpu_has_vnni() else 'no'} "
          f"(8-bit activations {'full range' if cpu_has_vnni() else 'reduced to 7 bits'}).")
    print(f"Weights: {weights}.")
    print(f"Load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPU(s).")
    image, samples = test_image(), sample_images()
    for key in models:
        name, head_kind = AESTHETIC[key]
        base = AestheticModel(model_name=name, head_kind=head_kind, pretrained=clip_weights, head_path=head_weights,
                              shared_batches=False, batch_size=8)
        # fp32 first: its scores on the samples set the head calibration shared by every precision.
        fp32, build = load_block(base, "fp32", random_weights, None)
        calibration = None
        if random_weights:
            raw = fp32.score(samples, allow_random=True)
            gain = 2.5 / (max(raw) - min(raw))
            calibration = (gain, 4.0 - min(raw) * gain)
            rescale_head(fp32.load_model(allow_random=True)[2], *calibration)
        reference = fp32.score(samples, allow_random=True)
        reference_emb = fp32.embed(samples, allow_random=True)
        spread = torch.cdist(reference_emb, reference_emb).max().item()
        print(f"\n  {name} ({head_kind} head): fp32 scores of the 8 samples {min(reference):.2f}-{max(reference):.2f}, "
              f"embedding spread (max pairwise L2) {spread:.3f}")
        print(f"  {'precision':<10} {'build s':>8} " + " ".join(f"{'b' + str(b) + ' s/img':>11} {'(cpu)':>7}" for b in batches)
              + f" {'max |dscore|':>12} {'max |demb|':>10} {'b1 vs b8':>9}")
        for precision in precisions:
            block, seconds = (fp32, build) if precision == "fp32" else load_block(base, precision, random_weights, calibration)
            if random_weights and precision != "fp32":
                a, b = fp32.load_model(allow_random=True), block.load_model(allow_random=True)
                assert torch.equal(a[0].visual.conv1.weight, b[0].visual.conv1.weight), "random weights differ"
            timings = [per_image(block.model_copy(update={"batch_size": b}), [image] * b, reps) for b in batches]
            scores = block.score(samples, allow_random=True)
            diff = max(abs(x - y) for x, y in zip(scores, reference))
            emb_diff = (block.embed(samples, allow_random=True) - reference_emb).norm(dim=-1).max().item()
            # Batch composition: the same image scored alone and inside the batch of samples.
            alone = block.model_copy(update={"batch_size": 1}).score(samples[:1], allow_random=True)[0]
            print(f"  {precision:<10} {seconds:8.1f} " + " ".join(f"{t:11.3f} {c:7.3f}" for t, c in timings)
                  + f" {diff:12.4f} {emb_diff:10.4f} {abs(alone - scores[0]):9.4f}")
            if key == "l14" and 8 in batches:
                t8, c8 = timings[batches.index(8)]
                agree = "agrees" if diff <= 0.05 else "DISAGREES"
                print(f"  {'':<10} batch 8: {t8:.3f} s/image wall {'meets' if t8 <= 0.6 else 'misses'} the 0.6 s goal "
                      f"(CPU time / 2 threads: {c8 / 2:.3f} s, the wall time on 2 idle cores; an upper bound, CPU time inflates on a busy machine)"
                      + ("" if precision == "fp32" else f"; {agree} with fp32 within 0.05"))
        if assets:
            counts = [1 + i % 2 for i in range(assets)]
            print(f"  Shared batches: {assets} assets' threads at once, scoring {counts} images ({sum(counts)} in all), "
                  f"batch_size 8, batch_wait_ms 5:")
            for precision in precisions:
                block = base.model_copy(update={"precision": precision})
                without, without_cpu = threads_scoring(block, counts, image)
                shared = block.model_copy(update={"shared_batches": True})
                batcher = shared.batcher(allow_random=True)
                before = batcher.passes
                with_batches, with_cpu = threads_scoring(shared, counts, image)
                print(f"    {precision:<6} without: {without:.3f} s/image wall, {without_cpu:.3f} CPU ({len(counts)} concurrent passes)   "
                      f"shared: {with_batches:.3f} wall, {with_cpu:.3f} CPU ({batcher.passes - before} passes)")
    print(f"Load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="b32,l14", help="aesthetic models: b32, l14, both comma-separated, or none")
    parser.add_argument("--batches", default="8,32", help="aesthetic batch sizes")
    parser.add_argument("--precisions", default="fp32,int8,onnx", help="aesthetic precisions: fp32, int8, onnx (measured when onnxruntime is importable)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the goal is for 2 cores)")
    parser.add_argument("--aesthetic-reps", type=int, default=1, help="timed runs per aesthetic batch (median)")
    parser.add_argument("--assets", type=int, default=8, help="concurrent assets for the shared-batch figure (0: skip)")
    parser.add_argument("--clip-weights", help="a real CLIP checkpoint file (with --head-weights; default: random weights)")
    parser.add_argument("--head-weights", help="a real aesthetic head .pth")
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per cheap gate")
    parser.add_argument("--skip-cheap", action="store_true", help="aesthetic gate only")
    args = parser.parse_args(argv)
    print(f"brandforge gate benchmark — {os.cpu_count()} CPU(s)\n")
    if not args.skip_cheap:
        cheap_gates(args.repeat)
    models = [m for m in args.models.split(",") if m and m != "none"]
    unknown = [m for m in models if m not in AESTHETIC]
    if unknown:
        parser.error(f"--models must name {sorted(AESTHETIC)} or none (got {unknown})")
    if models:
        try:
            import torch
        except ImportError:
            pass
        else:
            torch.set_num_threads(args.threads)
        aesthetic(models, [int(b) for b in args.batches.split(",")], args.precisions.split(","), args.aesthetic_reps,
                  args.assets, args.clip_weights, args.head_weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
