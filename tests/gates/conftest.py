"""Fixtures of the gate tests (the images themselves are made in tests/gates/images.py)."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.gates.images import demo_photo


@pytest.fixture
def good() -> Image.Image:
    """A real photo (the demo coffee cup) at 512x384: passes every gate with default thresholds."""
    return demo_photo()
