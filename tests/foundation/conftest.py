"""Fixtures of the foundation tests: an "internal" server on 127.0.0.1 that counts every request."""

from __future__ import annotations

import pytest

from tests.fakes.base import Served
from tests.fakes.internal import InternalServer


@pytest.fixture(scope="module")
def internal():
    server = InternalServer()
    with Served(server.app) as served:
        server.url, server.port = served.url, served.port
        yield server
