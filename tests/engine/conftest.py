"""Engine tests run single-threaded: the toy models are tiny, and on a loaded 2-core machine OpenMP's
spinning threads make them hundreds of times slower than one thread.  One ``jmipose demo --quick``
run per session serves the demo tests and the predict tests (its checkpoint)."""

from pathlib import Path

import pytest
import torch

from jmipose.cli import main as cli


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> Path:
    """The output folder of ``jmipose demo --quick --paper-recipe --ablation`` (through the command line,
    one thread; the two opt-in parts add a few seconds)."""
    out = tmp_path_factory.mktemp("quick_demo")
    threads = torch.get_num_threads()
    try:
        assert cli(["demo", "--quick", "--out", str(out), "--no-progress", "--threads", "1", "--paper-recipe",
                    "--ablation"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out
