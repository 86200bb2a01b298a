"""Encode step: write the final file — format, quality, sRGB, and its provenance embedded.

Generation parameters go into the file itself — PNG text chunks, or EXIF
ImageDescription plus an XMP packet for JPEG, WebP and AVIF — together with the
IPTC DigitalSourceType `trainedAlgorithmicMedia` that marks AI-generated media,
and an sRGB ICC profile so every viewer shows the same colours. Optionally a
C2PA signer block adds a signed manifest (Content Credentials) on top.
"""

from __future__ import annotations

import io
import json
import os
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

from PIL import Image, ImageCms, PngImagePlugin
from pydantic import BaseModel, ConfigDict, Field, model_validator

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
EXIF_IMAGE_DESCRIPTION = 0x010E
EXIF_SOFTWARE = 0x0131
SUFFIX = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "avif": ".avif"}
CONTENT_TYPE = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif"}


class EncodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["jpeg", "png", "webp", "avif"] | None = Field(None, description="Defaults to the recipe's output_format.")
    quality: int = Field(90, ge=1, le=100, description="JPEG/WebP/AVIF quality.")
    lossless: bool = Field(False, description="WebP only: lossless.")
    progressive: bool = Field(False, description="JPEG only: progressive scan (smaller for the web, ~4× slower to encode).")
    subsampling: Literal["4:4:4", "4:2:2", "4:2:0"] = Field("4:2:0", description="JPEG/AVIF chroma subsampling.")
    compress_level: int = Field(6, ge=0, le=9, description="PNG only: zlib level (1 is fast, 9 is small).")
    speed: int = Field(8, ge=0, le=10, description="AVIF only: encoder speed (10 fastest).")
    c2pa: bool = Field(False, description="Embed a signed C2PA manifest (needs a C2PA signer block).")
    c2pa_signer: str | None = Field(None, description="Saved C2PA signer block ('slug/name'); default: the client profile's.")

    @model_validator(mode="after")
    def _consistent(self) -> "EncodeParams":
        if self.lossless and self.format not in (None, "webp"):
            raise ValueError(f"lossless is only for format 'webp' (format is {self.format!r})")
        if self.c2pa_signer and not self.c2pa:
            raise ValueError("c2pa_signer is set but c2pa is false; set c2pa: true to sign")
        return self


@lru_cache(maxsize=1)
def srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


# The ICC header's creation time (bytes 24-35: six big-endian uint16). lcms stamps the current
# second, which made two encodes of the same pixels differ across processes (a replay's bytes).
ICC_DATE = struct.pack(">6H", 2024, 1, 1, 0, 0, 0)


@lru_cache(maxsize=1)
def srgb_icc() -> bytes:
    """The sRGB profile embedded in every output, byte-identical in every process (fixed date; lcms
    leaves the profile ID, which would hash the date, at zero)."""
    icc = srgb_profile().tobytes()
    return icc[:24] + ICC_DATE + icc[36:]


def to_srgb(image: Image.Image) -> Image.Image:
    """RGB in sRGB: an embedded non-sRGB ICC profile (Display P3, Adobe RGB …) is converted, not dropped."""
    icc = image.info.get("icc_profile")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if not icc:
        return rgb
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(src).lower().replace(" ", ""):
            return rgb
        return ImageCms.profileToProfile(rgb, src, srgb_profile(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError):
        return rgb  # an unreadable profile: treat the pixels as sRGB, as browsers do


def xmp_packet(params: dict[str, Any]) -> bytes:
    blob = escape(json.dumps(params, sort_keys=True, default=str), {'"': "&quot;"})
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
 xmlns:brandforge="https://brandforge.dev/ns/1.0/"
 Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}" brandforge:params="{blob}"/>
</rdf:RDF></x:xmpmeta><?xpacket end="w"?>""".encode()


def write_image(image: Image.Image, path: Path, fmt: str, p: EncodeParams, params: dict[str, Any]) -> None:
    text = json.dumps(params, sort_keys=True, default=str)
    img = image if image.mode == "RGB" else image.convert("RGB")
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("brandforge", text)
        info.add_itxt("DigitalSourceType", DIGITAL_SOURCE_TYPE)
        # Pillow's `xmp=` writes nothing for PNG; the XMP packet goes in its own iTXt chunk.
        info.add_itxt("XML:com.adobe.xmp", xmp_packet(params).decode())
        img.save(path, format="PNG", pnginfo=info, compress_level=p.compress_level, icc_profile=srgb_icc())
        return
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = text
    exif[EXIF_SOFTWARE] = "brandforge"
    common = {"exif": exif.tobytes(), "xmp": xmp_packet(params), "icc_profile": srgb_icc()}
    if fmt == "jpeg":
        img.save(path, format="JPEG", quality=p.quality, progressive=p.progressive, subsampling=p.subsampling, **common)
    elif fmt == "webp":
        img.save(path, format="WEBP", quality=p.quality, lossless=p.lossless, method=4, **common)
    else:
        img.save(path, format="AVIF", quality=p.quality, subsampling=p.subsampling, speed=p.speed, **common)


def encode_image(
    image: Image.Image,
    path_stem: Path,
    fmt: str,
    quality: int | EncodeParams,
    params: dict[str, Any],
    signer: Any = None,
) -> Path:
    """Save `image` as `fmt` next to `path_stem`, with `params` embedded (and signed when a signer is given)."""
    p = quality if isinstance(quality, EncodeParams) else EncodeParams(quality=quality)
    path = path_stem.with_suffix(SUFFIX[fmt])
    if signer is None:
        write_image(image, path, fmt, p, params)
        return path
    unsigned = path.with_name(f".unsigned-{os.getpid()}-{path.name}")
    try:
        write_image(image, unsigned, fmt, p, params)
        path.unlink(missing_ok=True)
        signer.sign_file(unsigned, path, params)
    finally:
        unsigned.unlink(missing_ok=True)
    return path


def read_embedded_params(path: str | Path) -> dict[str, Any]:
    """The generation parameters brandforge embedded in a file (for audits and tests)."""
    with Image.open(path) as img:
        if img.format == "PNG":
            return json.loads(img.text["brandforge"])
        return json.loads(img.getexif()[EXIF_IMAGE_DESCRIPTION])


def read_xmp(path: str | Path) -> str:
    """The file's XMP packet as text ('' when none): where each format keeps it."""
    with Image.open(path) as img:
        if img.format == "PNG":
            return img.text.get("XML:com.adobe.xmp", "")
        xmp = img.info.get("xmp", b"")
        return xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else str(xmp)
