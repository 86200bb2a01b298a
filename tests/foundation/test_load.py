"""Loading validates and normalises sources; bad files are refused with a reason."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from brandforge.models import AssetRejected
from brandforge.tasks.load import MAX_SIDE, list_local, normalise_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(w=320, h=240, mode="RGB") -> Image.Image:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


@pytest.mark.parametrize("fmt,expected", [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WebP"), ("TIFF", "TIFF")])
def test_supported_formats_load_as_rgb(fmt, expected):
    img, got, notes = normalise_image(encode(photo(), fmt))
    assert (img.mode, img.size, got) == ("RGB", (320, 240), expected)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img, _, _ = normalise_image(encode(photo(320, 240), "JPEG", exif=exif.tobytes()))
    assert img.size == (240, 320)


def test_cmyk_becomes_rgb():
    img, _, notes = normalise_image(encode(photo(mode="CMYK"), "JPEG"))
    assert img.mode == "RGB" and any("CMYK" in n for n in notes)


def test_palette_image_becomes_rgb():
    img, _, _ = normalise_image(encode(photo().quantize(16), "PNG"))
    assert img.mode == "RGB"


def test_sixteen_bit_is_reduced_to_eight():
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    img, _, notes = normalise_image(encode(Image.fromarray(arr), "PNG"))
    assert img.mode == "RGB" and any("16-bit" in n for n in notes)
    assert np.asarray(img)[..., 0].max() > 200  # scaled, not clipped to black


def test_alpha_is_flattened_onto_white():
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    img, _, notes = normalise_image(encode(rgba, "PNG"))
    assert img.getpixel((5, 5)) == (255, 255, 255) and any("transparency" in n for n in notes)


def test_large_images_are_downscaled():
    img, _, notes = normalise_image(encode(Image.new("RGB", (5000, 1000), "gray"), "PNG"))
    assert max(img.size) == MAX_SIDE and any("downscaled" in n for n in notes)


def test_files_over_8_mb_are_downscaled():
    data = encode(photo(2000, 1500), "PNG")  # random pixels barely compress
    assert len(data) > 8 * 1024 * 1024
    img, _, notes = normalise_image(data)
    assert max(img.size) < 2000 and any("downscaled" in n for n in notes)


# ---- bad input: each refused with a reason that says what is wrong -----------------------------


def test_zero_byte_file():
    with pytest.raises(AssetRejected, match="empty file"):
        normalise_image(b"")


def test_text_file_is_not_an_image():
    with pytest.raises(AssetRejected, match="not an image"):
        normalise_image(b"name,price\nmug,12\n")


def test_unsupported_format_names_the_allowed_ones():
    with pytest.raises(AssetRejected, match="unsupported format GIF; allowed: JPEG, PNG, WebP, TIFF"):
        normalise_image(encode(photo(), "GIF"))


def test_truncated_jpeg():
    data = encode(photo(640, 480), "JPEG")
    with pytest.raises(AssetRejected, match="truncated"):
        normalise_image(data[: len(data) // 2])


def test_corrupt_png_checksum():
    data = bytearray(encode(photo(), "PNG"))
    data[60:90] = b"\x00" * 30
    with pytest.raises(AssetRejected):
        normalise_image(bytes(data))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(AssetRejected, match="decompression bomb"):
        normalise_image(_png_header_only(50_000, 50_000))


def test_moderate_bomb_below_pillows_limit_is_still_refused():
    with pytest.raises(AssetRejected, match="decompression bomb"):
        normalise_image(_png_header_only(12_000, 9_000))  # 108 MP: over our 80 MP cap


def test_tiny_image():
    with pytest.raises(AssetRejected, match="too small"):
        normalise_image(encode(Image.new("RGB", (8, 8)), "PNG"))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AssetRejected, match="does not exist"):
        list_local(tmp_path / "nope")
