"""The fuzzers' tensors are tiny: one torch thread (intra-op threads only add synchronisation, which
costs milliseconds per op on a loaded machine).  The cpp backend's OpenMP threads are unaffected."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
