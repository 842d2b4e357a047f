"""Engine tests run single-threaded (the toy models are tiny; ``single_thread`` in tests/conftest.py).
One ``jmipose demo --quick`` run per session serves the demo tests and the predict tests (its
checkpoint)."""

from pathlib import Path

import pytest
from torch.utils.benchmark import set_torch_threads

from jmipose.cli import main as cli


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every engine test runs with one torch thread."""


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> Path:
    """The output folder of ``jmipose demo --quick --paper-recipe --ablation`` (through the command line,
    one thread; the two opt-in parts add a few seconds)."""
    out = tmp_path_factory.mktemp("quick_demo")
    with set_torch_threads(1):  # the command sets one thread; the session's count is restored after it
        assert cli(["demo", "--quick", "--out", str(out), "--no-progress", "--threads", "1", "--paper-recipe",
                    "--ablation"]) == 0
    return out
