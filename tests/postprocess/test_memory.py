"""Memory stays bounded: a 4096² image through the whole local chain in under 1 GiB peak RSS.

Measured in a fresh subprocess (peak RSS of this pytest process says nothing about the chain).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
from PIL import Image
from brandforge.models import StepSpec
from brandforge.tasks.postprocess.chain import ChainContext, postprocess_candidate

out = Path(sys.argv[1])
def peak_kib():
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would report the (large) pytest parent.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

base = peak_kib()
chain = [StepSpec(step=s, params=p) for s, p in [
    ("upscale", {"long_side": 4096}),
    ("reframe", {"ratios": ["1:1", "4:5"]}),
    ("grade", {"strength": 0.5}),
    ("watermark", {"scale": 0.2}),
    ("grain", {"amount": 5}),
    ("vignette", {}),
    ("soft_light", {"amount": 0.2}),
    ("lens_distortion", {"k": 0.02}),
    ("encode", {"format": "jpeg", "quality": 90}),
]]
ctx = ChainContext(seed=3, palette=("#14213d", "#e8a838", "#c8553d"), logo_path=str(out / "logo.png"))
result = postprocess_candidate.fn(str(out / "raw.png"), chain, ctx, str(out / "final"))
sizes = {k: Image.open(v).size for k, v in {"main": result.path, **result.extra_outputs}.items()}
print(json.dumps({"peak_kib": peak_kib(), "before_chain_kib": base, "sizes": sizes}))
"""


def test_4096_square_through_the_chain_under_1_gib(tmp_path):
    from tests.postprocess.images import make_logo, subject_scene

    # The inputs are made here, so the subprocess's peak RSS is the chain's alone.
    image, _ = subject_scene((2048, 2048), centre=(0.7, 0.4))
    image.save(tmp_path / "raw.png", compress_level=1)
    make_logo((400, 200)).save(tmp_path / "logo.png")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["sizes"] == {"main": [4096, 4096], "4x5": [4096, 5120]}  # extras keep the main short side
    print(f"peak RSS of the chain process: {report['peak_kib'] // 1024} MiB")
    assert report["peak_kib"] < 1024 * 1024, report
