"""Structure-control maps computed from a source image: edges, depth, pose.

A recipe's `control` (kind `edges`, `depth` or `pose`, no reference image given)
conditions the generation on a map of the source. Edges are OpenCV's Canny; depth
and pose come from transformers models named in the client profile's
`control_models` (a local model folder, or a Hugging Face hub repo id already in
the local cache: `local_files_only`, nothing is downloaded at run time):

- depth: any `AutoModelForDepthEstimation` (Depth Anything, DPT …); the map is
  the predicted depth at the source's size, min-max normalised to 8-bit grey
  (near = bright, as the depth ControlNets expect).
- pose: a VitPose model (`VitPoseForPoseEstimation`, COCO 17 keypoints) run on
  the whole image as one person box; the keypoints scoring at least
  `POSE_MIN_SCORE` are drawn as an OpenPose-style coloured skeleton on black.

Each map is a PNG; its bytes' hash is part of the generation key (the plan writes
it next to the source), so a changed estimator or source redoes the image.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from brandforge.blocks.providers.http import edge_map
from brandforge.models import GenerationRequest, Rejected, content_hash

POSE_MIN_SCORE = 0.3
# COCO-17 keypoint pairs (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
                 (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))
_MODELS: dict[tuple[str, str], tuple[Any, Any, threading.Lock]] = {}
_LOAD_LOCK = threading.Lock()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _load(kind: str, ref: str) -> tuple[Any, Any, threading.Lock]:
    """(processor, model, lock) of an estimator, loaded once per process from a local folder or the hub cache."""
    field = f"control_models.{kind}"
    if not ref:
        raise Rejected(f"control {kind}: the profile's {field} names no {kind} model (a local model folder or a "
                       "Hugging Face repo id in the local cache)", provider="control")
    key = (kind, str(Path(ref).expanduser().resolve()) if Path(ref).expanduser().exists() else ref)
    with _LOAD_LOCK:
        if key not in _MODELS:
            import transformers

            cls = transformers.AutoModelForDepthEstimation if kind == "depth" else transformers.VitPoseForPoseEstimation
            try:
                processor = transformers.AutoImageProcessor.from_pretrained(ref, local_files_only=True)
                model = cls.from_pretrained(ref, local_files_only=True).eval()
            except (OSError, ValueError) as exc:
                raise Rejected(f"control {kind}: {field} {ref!r} does not load as a {kind} model (offline: a local "
                               f"folder or a repo already in the Hugging Face cache): {exc}", provider="control") from exc
            _MODELS[key] = (processor, model, threading.Lock())
        return _MODELS[key]


def depth_map(png: bytes, ref: str) -> bytes:
    """The source's predicted depth at its own size, normalised to 8-bit grey, as PNG."""
    import numpy as np
    import torch

    img = Image.open(io.BytesIO(png)).convert("RGB")
    processor, model, lock = _load("depth", ref)
    with lock, torch.no_grad():
        depth = model(**processor(images=img, return_tensors="pt")).predicted_depth
    depth = torch.nn.functional.interpolate(depth[:, None].float(), size=(img.height, img.width), mode="bicubic",
                                            align_corners=False)[0, 0].numpy()
    lo, hi = float(depth.min()), float(depth.max())
    grey = ((depth - lo) / ((hi - lo) or 1.0) * 255).round().clip(0, 255).astype(np.uint8)
    return _png(Image.fromarray(grey, "L"))


def pose_map(png: bytes, ref: str, *, min_score: float = POSE_MIN_SCORE) -> bytes:
    """The source's body keypoints (the whole image as one person box) drawn as a skeleton on black, as PNG."""
    import cv2
    import numpy as np
    import torch

    img = Image.open(io.BytesIO(png)).convert("RGB")
    processor, model, lock = _load("pose", ref)
    boxes = [np.array([[0, 0, img.width, img.height]], dtype=np.float32)]  # COCO x, y, w, h
    with lock, torch.no_grad():
        outputs = model(**processor(img, boxes=boxes, return_tensors="pt"))
    person = processor.post_process_pose_estimation(outputs, boxes=boxes)[0][0]
    points = person["keypoints"].numpy()
    scores = person["scores"].numpy()
    canvas = np.zeros((img.height, img.width, 3), dtype=np.uint8)
    thickness = max(1, round(max(img.size) / 160))
    seen = [bool(s >= min_score) for s in scores]
    for i, (a, b) in enumerate(COCO_SKELETON):
        if a < len(points) and b < len(points) and seen[a] and seen[b]:
            hue = int(180 * i / len(COCO_SKELETON))
            colour = cv2.cvtColor(np.uint8([[[hue, 255, 255]]]), cv2.COLOR_HSV2RGB)[0, 0].tolist()
            cv2.line(canvas, tuple(int(v) for v in points[a]), tuple(int(v) for v in points[b]), colour, thickness,
                     cv2.LINE_AA)
    for (x, y), ok in zip(points, seen):
        if ok:
            cv2.circle(canvas, (int(x), int(y)), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return _png(Image.fromarray(canvas, "RGB"))


def control_map(png: bytes, kind: str, models: dict[str, str] | None = None) -> bytes:
    """The `kind` map of a source PNG; `models` is the profile's control_models (depth / pose → model)."""
    if kind == "edges":
        return edge_map(png)
    if kind == "depth":
        return depth_map(png, (models or {}).get("depth", ""))
    if kind == "pose":
        return pose_map(png, (models or {}).get("pose", ""))
    raise Rejected(f"control kind {kind!r} is not one of edges, depth, pose", provider="control")


def with_control_map(request: GenerationRequest, folder: str | Path, models: dict[str, str] | None = None) -> GenerationRequest:
    """The request with its structure-control map computed from its (local, normalised) source and written to
    `folder` as control-<kind>-<hash>.png: `control.image` names the file, `control.map_sha256` its content,
    which is what the generation key takes. A request without control, or with a given reference image, is
    returned as it is."""
    control = request.control
    if control is None or control.image is not None:
        return request
    from brandforge.blocks.providers.http import read_source

    data = control_map(read_source(request.source_image, provider="control"), control.kind, models)
    digest = content_hash(data)
    path = Path(folder) / f"control-{control.kind}-{digest[:16]}.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return request.model_copy(update={"control": control.model_copy(update={"image": f"file://{path.resolve()}",
                                                                           "map_sha256": digest})})
