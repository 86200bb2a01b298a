"""Face restoration step: GFPGAN or CodeFormer through a refiner — only when there are faces.

Generated faces are often slightly wrong, but a restoration call costs money
and time and can harm an image without people, so a cheap detector runs first:
scikit-image's LBP frontal-face cascade (the OpenCV cascade file it ships) on a
≤512 px grey copy. The cascade alone fires on some textures (a helmet's
reflections, fabric), so each hit must also be mostly skin-coloured (the
classic YCbCr skin box) unless `skin_check` is off — which it should be for
monochrome styles such as pencil sketches. No face: the image passes through
untouched and no refiner is called.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from brandforge.models import InvalidInput


class FaceRestoreParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal["gfpgan", "codeformer"] = "gfpgan"
    fidelity: float = Field(0.5, ge=0, le=1, description="CodeFormer only: 0 = more restoration, 1 = closer to the input.")
    refiner: str | None = Field(None, description="Saved refiner block ('slug/name'); default: the client profile's refiner.")
    min_face: float = Field(0.06, gt=0, le=1, description="Smallest face side as a fraction of the image's shorter side.")
    skin_check: bool = Field(True, description="Keep only hits that are mostly skin-coloured (turn off for monochrome styles).")
    detect_side: int = Field(512, ge=128, le=2048, description="Long side of the copy the detector runs on.")


@lru_cache(maxsize=1)
def _cascade() -> Any:
    try:
        from skimage import data
        from skimage.feature import Cascade
    except ImportError as exc:
        raise InvalidInput(f"the faces step needs scikit-image (pip install 'brandforge[postprocess]'): {exc}") from exc
    return Cascade(data.lbp_frontal_face_cascade_filename())


def skin_fraction(rgb: np.ndarray) -> float:
    """Share of pixels inside the YCbCr skin box (Cb 77-127, Cr 133-173; Chai & Ngan 1999)."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return float(((cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)).mean()) if rgb.size else 0.0


def detect_faces(image: Image.Image, p: FaceRestoreParams | None = None) -> list[tuple[int, int, int, int]]:
    """Faces as (left, top, width, height) in the image's pixels, largest first."""
    p = p or FaceRestoreParams()
    grey = image.convert("L")
    s = min(1.0, p.detect_side / max(grey.size))
    if s < 1:
        grey = grey.resize((max(1, round(grey.width * s)), max(1, round(grey.height * s))), Image.Resampling.BILINEAR)
    arr = np.asarray(grey, dtype=np.float64) / 255
    smallest = max(24, round(min(arr.shape) * p.min_face))
    hits = _cascade().detect_multi_scale(
        img=arr, scale_factor=1.2, step_ratio=1, min_size=(smallest, smallest), max_size=(min(arr.shape), min(arr.shape))
    )
    faces = []
    rgb = np.asarray(image.convert("RGB").resize(grey.size, Image.Resampling.BILINEAR)) if p.skin_check else None
    for d in hits:  # skimage already merges overlapping detections
        x, y, w, h = int(d["c"]), int(d["r"]), int(d["width"]), int(d["height"])
        if rgb is not None:
            # The central half of the box: cheeks, nose and eyes, not hair or background.
            core = rgb[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4]
            if skin_fraction(core) < 0.4:
                continue
        faces.append((round(x / s), round(y / s), round(w / s), round(h / s)))
    return sorted(faces, key=lambda f: -f[2] * f[3])


def restore_faces(image: Image.Image, p: FaceRestoreParams, refiner: Any) -> tuple[Image.Image, dict[str, Any]]:
    """The restored image (same size) and a note of how many faces were found."""
    faces = detect_faces(image, p)
    if not faces:
        return image, {"faces": 0, "restored": False}
    from brandforge.tasks.postprocess.context import from_bytes, run_async, to_png

    data = to_png(image)
    restored = from_bytes(run_async(lambda: refiner.restore_faces(data, p.model, p.fidelity)), "faces")
    if restored.size != image.size:
        # Both models may enlarge; this step restores, the upscale step sizes.
        restored = restored.resize(image.size, Image.Resampling.LANCZOS)
    return restored, {"faces": len(faces), "restored": True, "model": p.model}
