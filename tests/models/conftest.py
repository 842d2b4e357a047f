"""Model tests run single-threaded: the tiny models gain nothing from intra-op threads
(``single_thread`` in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every model test runs with one torch thread."""
