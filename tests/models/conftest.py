"""Model tests run single-threaded: the tiny models gain nothing from intra-op threads, and on a
shared 2-core machine thread oversubscription made a 0.1 s training step take seconds."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
