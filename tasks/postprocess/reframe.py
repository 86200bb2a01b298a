"""Reframe step: fit one image to each channel's aspect ratio (16:9 → 9:16, 1:1, 4:5 …).

Two ways to get there:

* **crop** — a smart crop that keeps the subject: a saliency map (spectral
  residual for "what stands out in structure" plus frequency-tuned colour
  contrast for "what stands out in colour") computed on a ≤96 px copy picks the
  window of the target ratio that holds the most of it, centred on the subject
  where several windows hold all of it. Never a blind centre crop.
* **extend** — grow the canvas to the ratio and fill the new area: through a
  refiner block that can outpaint (generative fill with a mask), or locally by
  mirroring the edges or with a blurred, enlarged copy of the image.

One step can list several ratios; the chain turns each into its own output
(see `chain.py`), so one asset yields every channel's format in one run.
"""

from __future__ import annotations

import io
import re
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from brandforge.tasks.postprocess.grade import srgb_to_lab

SALIENCY_SIDE = 96
_RATIO = re.compile(r"^\s*(\d{1,3})\s*:\s*(\d{1,3})\s*$")


def parse_ratio(text: str) -> tuple[int, int]:
    m = _RATIO.match(text)
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise ValueError(f"ratios must be written 'W:H' with whole numbers 1-999, such as '9:16' or '4:5' (got {text!r})")
    return int(m.group(1)), int(m.group(2))


def ratio_label(text: str) -> str:
    """A file-name-safe label for a ratio: '9:16' → '9x16'."""
    w, h = parse_ratio(text)
    return f"{w}x{h}"


class ReframeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ratios: list[str] = Field(description="Target aspect ratios as 'W:H'; the first is the main output, the rest extras.")
    mode: Literal["crop", "extend"] = Field("crop", description="crop keeps the subject; extend outpaints the new area.")
    fill: Literal["auto", "provider", "mirror", "blur"] = Field(
        "auto", description="extend only: auto = the refiner when one is configured, else blur."
    )
    attention: Literal["saliency", "saliency+faces"] = Field(
        "saliency", description="crop only: also keep detected faces in frame (needs scikit-image; ~0.2 s more)."
    )
    refiner: str | None = Field(None, description="Saved refiner block ('slug/name'); default: the client profile's refiner.")
    prompt: str = Field("", description="extend with a provider: what to paint in the new area.")
    main_ratio: str | None = Field(None, description="Set by the chain on an extra format: the main output's ratio, "
                                   "whose short side the extra keeps at least (a 9:16 crop of a square is enlarged).")

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("ratios must list at least one 'W:H' ratio, such as ['9:16', '1:1']")
        labels = [ratio_label(r) for r in v]
        if len(set(labels)) != len(labels):
            raise ValueError(f"ratios must be distinct (got {v})")
        return [f"{w}:{h}" for w, h in map(parse_ratio, v)]


# --------------------------------------------------------------------------- saliency


def _box_blur(a: np.ndarray, r: int) -> np.ndarray:
    """Box blur of radius r along both axes with edge padding (three passes ≈ a Gaussian)."""
    if r < 1:
        return a
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis)
        n = a.shape[axis]
        hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        a = (hi - lo) / (2 * r + 1)
    return a


def _smooth(a: np.ndarray, r: int) -> np.ndarray:
    for _ in range(3):
        a = _box_blur(a, r)
    return a


def _normalise(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def saliency_map(image: Image.Image, side: int = SALIENCY_SIDE) -> np.ndarray:
    """Saliency in 0..1 on a copy whose long side is `side` px (rows × columns of that copy)."""
    small = image if image.mode == "RGB" else image.convert("RGB")
    small = small.resize(
        (max(8, round(small.width * side / max(small.size))), max(8, round(small.height * side / max(small.size)))),
        Image.Resampling.BILINEAR,
        reducing_gap=2.0,  # box-reduce first: a full-resolution bilinear pass would cost more than the saliency
    )
    rgb = np.asarray(small, dtype=np.float64) / 255
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    # Spectral residual (Hou & Zhang 2007): what the log spectrum has beyond its local average.
    spectrum = np.fft.fft2(grey)
    log_amp = np.log(np.abs(spectrum) + 1e-9)
    residual = log_amp - _box_blur(log_amp, 1)
    sr = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    sr = _smooth(sr, 2)
    # Frequency-tuned (Achanta 2009): colour distance from the image's mean colour.
    lab = srgb_to_lab(rgb)
    lab_blur = np.stack([_smooth(lab[..., c], 1) for c in range(3)], axis=-1)
    ft = np.linalg.norm(lab_blur - lab.reshape(-1, 3).mean(axis=0), axis=-1)
    combined = 0.5 * _normalise(sr) + 0.5 * _normalise(ft)
    # A weak centre bias, as in human fixation data: between equal candidates the
    # photographer's framing wins, but a clearly off-centre subject still does.
    h, w = combined.shape
    y, x = np.mgrid[0:h, 0:w]
    r2 = ((x + 0.5) / w - 0.5) ** 2 + ((y + 0.5) / h - 0.5) ** 2
    return _normalise(combined * (0.75 + 0.25 * np.exp(-r2 / (2 * 0.3**2))))


def crop_size(size: tuple[int, int], ratio: tuple[int, int]) -> tuple[int, int]:
    """The largest (w, h) of the ratio that fits inside `size`."""
    w, h = size
    rw, rh = ratio
    if w * rh > h * rw:  # image is wider than the target: full height
        return max(1, min(w, round(h * rw / rh))), h
    return w, max(1, min(h, round(w * rh / rw)))


def _best_offset(profile: np.ndarray, window: float, scale: float, span: int) -> int:
    """Full-resolution offset (0..span) of the window holding the most saliency, centred on the subject."""
    if span <= 0:
        return 0
    n = len(profile)
    win = max(1, min(n, round(window * scale)))
    c = np.concatenate([[0.0], np.cumsum(profile)])
    sums = c[win:] - c[:-win]  # window starting at each thumbnail index
    best = sums.max()
    if best <= 0:
        return span // 2
    # Several windows may hold (almost) all of the subject: of those, take the one whose
    # centre is nearest the subject's centre of mass (saliency squared favours the peak).
    weights = profile**2
    centroid = float((weights * (np.arange(n) + 0.5)).sum() / weights.sum()) if weights.sum() > 0 else n / 2
    good = np.flatnonzero(sums >= best * 0.98)
    centres = good + win / 2
    pick = int(good[np.argmin(np.abs(centres - centroid))])
    # Centre on the subject where that window still holds (almost) all of it.
    centred = int(np.clip(round(centroid / scale - window / 2), 0, span))
    if sums[int(np.clip(round(centred * scale), 0, len(sums) - 1))] >= best * 0.98:
        return centred
    return int(np.clip(round(pick / scale), 0, span))


def add_faces(sal: np.ndarray, image: Image.Image) -> np.ndarray:
    """Saliency with detected faces raised to the maximum: people look at faces first."""
    from brandforge.tasks.postprocess.faces import detect_faces

    out = sal.copy()
    sy, sx = sal.shape[0] / image.height, sal.shape[1] / image.width
    for left, top, fw, fh in detect_faces(image):
        # The box plus some hair and chin: a crop that just clips the face box still cuts the head.
        y0, y1 = int((top - 0.4 * fh) * sy), int(np.ceil((top + 1.2 * fh) * sy))
        x0, x1 = int((left - 0.1 * fw) * sx), int(np.ceil((left + 1.1 * fw) * sx))
        out[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = 2.0
    return out


def smart_crop_box(image: Image.Image, ratio: tuple[int, int], faces: bool = False) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the subject-keeping crop of `ratio`."""
    w, h = image.size
    cw, ch = crop_size((w, h), ratio)
    if (cw, ch) == (w, h):
        return 0, 0, w, h
    sal = saliency_map(image)
    if faces:
        sal = add_faces(sal, image)
    scale = sal.shape[1] / w
    left = _best_offset(sal.sum(axis=0), cw, scale, w - cw) if cw < w else 0
    top = _best_offset(sal.sum(axis=1), ch, sal.shape[0] / h, h - ch) if ch < h else 0
    return left, top, left + cw, top + ch


# --------------------------------------------------------------------------- extend


def extend_canvas(size: tuple[int, int], ratio: tuple[int, int]) -> tuple[int, int, int, int]:
    """(canvas_w, canvas_h, left, top): the smallest canvas of `ratio` holding the image, centred."""
    w, h = size
    rw, rh = ratio
    if w * rh > h * rw:  # wider than the target: grow the height
        cw, ch = w, max(h, round(w * rh / rw))
    else:
        cw, ch = max(w, round(h * rw / rh)), h
    return cw, ch, (cw - w) // 2, (ch - h) // 2


def mirror_extend(image: Image.Image, ratio: tuple[int, int]) -> Image.Image:
    cw, ch, left, top = extend_canvas(image.size, ratio)
    arr = np.asarray(image.convert("RGB"))
    padded = np.pad(arr, ((top, ch - image.height - top), (left, cw - image.width - left), (0, 0)), mode="symmetric")
    return Image.fromarray(padded)


def blur_extend(image: Image.Image, ratio: tuple[int, int]) -> Image.Image:
    cw, ch, left, top = extend_canvas(image.size, ratio)
    image = image.convert("RGB")
    # Enlarge a small copy to cover the canvas and blur it: the new area carries the
    # image's own colours without repeating its shapes.
    cover = max(cw / image.width, ch / image.height)
    small_side = 64
    s = small_side / max(cw, ch)
    small = image.resize((max(1, round(image.width * cover * s)), max(1, round(image.height * cover * s))), Image.Resampling.BILINEAR)
    sx, sy = (small.width - round(cw * s)) // 2, (small.height - round(ch * s)) // 2
    small = small.crop((sx, sy, sx + max(1, round(cw * s)), sy + max(1, round(ch * s)))).filter(ImageFilter.GaussianBlur(3))
    canvas = small.resize((cw, ch), Image.Resampling.BICUBIC)
    canvas.paste(image, (left, top))
    return canvas


def outpaint_inputs(image: Image.Image, ratio: tuple[int, int]) -> tuple[bytes, bytes, tuple[int, int, int, int]]:
    """PNG bytes of the canvas (blur-filled, a neutral start for the provider), of the mask
    (white = paint here), and (canvas_w, canvas_h, left, top)."""
    cw, ch, left, top = extend_canvas(image.size, ratio)
    canvas = blur_extend(image, ratio)
    mask = Image.new("L", (cw, ch), 255)
    mask.paste(0, (left, top, left + image.width, top + image.height))
    out = []
    for img in (canvas, mask):
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out[0], out[1], (cw, ch, left, top)


def merge_outpaint(image: Image.Image, painted: bytes, geometry: tuple[int, int, int, int]) -> Image.Image:
    """The provider's canvas at our size with the original pixels put back exactly where they were."""
    cw, ch, left, top = geometry
    with Image.open(io.BytesIO(painted)) as got:
        canvas = got.convert("RGB")
    if canvas.size != (cw, ch):
        canvas = canvas.resize((cw, ch), Image.Resampling.LANCZOS)
    canvas.paste(image.convert("RGB"), (left, top))
    return canvas


def at_least_short_side(image: Image.Image, short: int) -> Image.Image:
    """`image` enlarged (Lanczos) so its shorter side is at least `short`; unchanged if it already is."""
    have = min(image.size)
    if have >= short:
        return image
    scale = short / have
    return image.resize((max(short, round(image.width * scale)), max(short, round(image.height * scale))), Image.Resampling.LANCZOS)


def reframe_local(image: Image.Image, ratio: str, mode: str, fill: str, faces: bool = False) -> Image.Image:
    """Crop or extend to one ratio without any provider."""
    r = parse_ratio(ratio)
    if mode == "crop":
        return image.crop(smart_crop_box(image, r, faces))
    return mirror_extend(image, r) if fill == "mirror" else blur_extend(image, r)
