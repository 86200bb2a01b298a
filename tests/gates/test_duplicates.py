"""Duplicate gate: pHash against what the ledger says is already published for the client."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from brandforge.blocks.ledger import Ledger
from brandforge.models import GateThresholds, LedgerEntry
from brandforge.tasks.gates.duplicates import check_duplicate, hamming, phash
from tests.gates.images import demo_photo

T = GateThresholds()


def jpeg_roundtrip(im: Image.Image, quality: int = 70) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def test_phash_is_64_bits_and_stable_under_resize_and_reencode(good):
    h = phash(good)
    assert len(h) == 16 and int(h, 16) >= 0
    assert hamming(h, phash(good.resize((300, 225)))) <= 2
    assert hamming(h, phash(jpeg_roundtrip(good))) <= 2


def test_different_images_are_far_apart(good):
    others = [demo_photo(n) for n in ("astronaut-portrait.png", "chelsea-cat.png", "rocket-launch.jpg")]
    assert min(hamming(phash(good), phash(o)) for o in others) > 12


def test_hamming_rejects_hashes_of_different_length():
    with pytest.raises(ValueError, match="same length"):
        hamming("ff", "ffff")


def test_near_duplicate_of_a_published_image_fails(good):
    published = [phash(demo_photo("chelsea-cat.png")), phash(good)]
    score = check_duplicate(phash(jpeg_roundtrip(good.resize((480, 360)))), published, T)
    assert not score.passed and score.score <= T.max_duplicate_distance and "near-duplicate" in score.detail


def test_new_image_passes_with_or_without_history(good):
    assert check_duplicate(phash(good), [], T).passed
    assert check_duplicate(phash(good), [phash(demo_photo("rocket-launch.jpg"))], T).passed


def test_ledger_lists_published_phashes_of_the_client_only(tmp_path, good):
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record(LedgerEntry(client="acme", source_uri="a.png", state="published", phash=phash(good)))
    ledger.record(LedgerEntry(client="acme", source_uri="b.png", state="quarantined", phash="0" * 16))
    ledger.record(LedgerEntry(client="other", source_uri="c.png", state="published", phash="f" * 16))
    ledger.record(LedgerEntry(client="acme", source_uri="d.png", state="published"))
    assert ledger.published_phashes("acme") == [phash(good)]
    assert ledger.published_phashes("acme", exclude_source_uri="a.png") == []  # its own earlier version
    assert not check_duplicate(phash(good), ledger.published_phashes("acme"), T).passed
