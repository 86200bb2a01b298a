"""Encode step: write the final file with its provenance embedded.

Generation parameters go into the file itself — PNG text chunks, or EXIF
ImageDescription plus an XMP packet for JPEG and WebP — together with the IPTC
DigitalSourceType `trainedAlgorithmicMedia` that marks AI-generated media.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

from PIL import Image, PngImagePlugin
from pydantic import BaseModel, ConfigDict, Field

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
EXIF_IMAGE_DESCRIPTION = 0x010E
EXIF_SOFTWARE = 0x0131
SUFFIX = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}
CONTENT_TYPE = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class EncodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["jpeg", "png", "webp"] | None = Field(None, description="Defaults to the recipe's output_format.")
    quality: int = Field(90, ge=1, le=100)


def xmp_packet(params: dict[str, Any]) -> bytes:
    blob = escape(json.dumps(params, sort_keys=True, default=str))
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
 xmlns:brandforge="https://brandforge.dev/ns/1.0/"
 Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}" brandforge:params="{blob}"/>
</rdf:RDF></x:xmpmeta><?xpacket end="w"?>""".encode()


def encode_image(image: Image.Image, path_stem: Path, fmt: str, quality: int, params: dict[str, Any]) -> Path:
    """Save `image` as `fmt` next to `path_stem`, with `params` embedded; returns the path."""
    path = path_stem.with_suffix(SUFFIX[fmt])
    text = json.dumps(params, sort_keys=True, default=str)
    img = image.convert("RGB")
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("brandforge", text)
        info.add_itxt("DigitalSourceType", DIGITAL_SOURCE_TYPE)
        info.add_itxt("XML:com.adobe.xmp", xmp_packet(params).decode())
        img.save(path, format="PNG", pnginfo=info, optimize=False)
    else:
        exif = Image.Exif()
        exif[EXIF_IMAGE_DESCRIPTION] = text
        exif[EXIF_SOFTWARE] = "brandforge"
        save_format = "JPEG" if fmt == "jpeg" else "WEBP"
        img.save(path, format=save_format, quality=quality, exif=exif.tobytes(), xmp=xmp_packet(params))
    return path


def read_embedded_params(path: str | Path) -> dict[str, Any]:
    """The generation parameters brandforge embedded in a file (for audits and tests)."""
    with Image.open(path) as img:
        if img.format == "PNG":
            return json.loads(img.text["brandforge"])
        return json.loads(img.getexif()[EXIF_IMAGE_DESCRIPTION])
