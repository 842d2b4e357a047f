"""Engine tests run single-threaded: the toy models are tiny, and on a loaded 2-core machine OpenMP's
spinning threads make them hundreds of times slower than one thread."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
