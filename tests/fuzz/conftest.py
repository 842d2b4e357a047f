"""The fuzzers' tensors are tiny: one torch thread (``single_thread`` in tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every fuzzer runs with one torch thread."""
