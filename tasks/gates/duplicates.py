"""Duplicate gate: a perceptual hash against everything already published for the client.

pHash (the DCT hash of imagehash, in numpy so the core install needs nothing
more): a 32x32 grey copy, its 2-D DCT, the 8x8 lowest frequencies compared
with their median — 64 bits, written as 16 hex digits. Resizing, re-encoding,
a watermark or a small colour shift move it by a few bits; a different image
by about 32. The ledger keeps the hash of every published image
(`LedgerEntry.phash`), so near-identical assets are not published twice.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from brandforge.models import GateScore, GateThresholds

HASH_SIZE = 8
HIGHFREQ_FACTOR = 4


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (rows: frequencies); any scale works for a median split."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def phash(image: Image.Image) -> str:
    """64-bit perceptual hash of `image` as 16 hex digits."""
    n = HASH_SIZE * HIGHFREQ_FACTOR
    grey = np.asarray(image.convert("L").resize((n, n), Image.Resampling.LANCZOS), dtype=np.float64)
    d = _dct_matrix(n)
    low = (d @ grey @ d.T)[:HASH_SIZE, :HASH_SIZE]
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex hashes of the same length."""
    if len(a) != len(b):
        raise ValueError(f"hashes must have the same length to compare ({len(a)} vs {len(b)} hex digits)")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def check_duplicate(image_hash: str, published: list[str], t: GateThresholds) -> GateScore:
    """Nearest published hash by Hamming distance; a duplicate at `max_duplicate_distance` or closer."""
    comparable = [h for h in published if h and len(h) == len(image_hash)]
    nearest = min((hamming(image_hash, h) for h in comparable), default=HASH_SIZE * HASH_SIZE)
    passed = nearest > t.max_duplicate_distance
    return GateScore(
        gate="duplicate", score=float(nearest), threshold=f"> {t.max_duplicate_distance} bits from every published image",
        limit=float(t.max_duplicate_distance), passed=passed,
        detail=(f"phash {image_hash}, nearest of {len(comparable)} published is {nearest} bits away" if passed
                else f"near-duplicate of a published image: phash {image_hash} is {nearest} bits away (<= {t.max_duplicate_distance})"),
    )
