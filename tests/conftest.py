"""Test-wide setup: Triton on the CPU interpreter when there is no GPU, hypothesis profiles, the
``gpu`` marker, the path of the shared real data, a guard that CI really runs the compiled
backends instead of skipping them, and the one-torch-thread fixture."""

from __future__ import annotations

import os
from pathlib import Path

# Must happen before anything imports triton: the interpreter is chosen when kernels are decorated.
try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover - torch is required anyway
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from torch.utils.benchmark import set_torch_threads  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

settings.register_profile(
    "default", deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci", deadline=None, print_blob=True, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def pytest_configure(config: pytest.Config) -> None:
    required = [b for b in os.environ.get("JMIPOSE_REQUIRE_BACKENDS", "").split(",") if b]
    if required:
        import jmipose

        status = jmipose.ops.backends()
        missing = {b: status[b].reason for b in required if not status[b].live}
        if missing:
            raise pytest.UsageError(f"JMIPOSE_REQUIRE_BACKENDS: backends not live: {missing} "
                                    f"(jmipose imported from {jmipose.__file__})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (marker gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# CI sets it (.ci/run): there the real files must be present, and a test that needs them fails instead
# of skipping.
REQUIRE_SHARED_DATA = os.environ.get("JMIPOSE_REQUIRE_SHARED_DATA", "") not in ("", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test files in ../shared/data: present beside every checkout of the team and in CI,
    absent from a user's clone, where the tests that need them skip (JMIPOSE_REQUIRE_SHARED_DATA=1:
    they fail instead)."""
    if not SHARED_DATA.is_dir():
        message = (f"needs the real PoseTrack test files in the folder ../shared/data beside the repository "
                   f"({SHARED_DATA}), which is not there")
        if REQUIRE_SHARED_DATA:
            pytest.fail(f"JMIPOSE_REQUIRE_SHARED_DATA is set and the test {message}")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture
def single_thread():
    """One torch intra-op thread for the test, restored after it.  For tests of tiny tensors and toy
    models: intra-op threads only add synchronisation, and on a loaded 2-core machine OpenMP's
    spinning threads made a 0.1 s training step take seconds and a tiny softmax wait milliseconds
    for a thread to be scheduled.  Where the C++ library shares torch's OpenMP runtime (the CPU
    wheels' libgomp), the cpp backend runs on one thread too.
    A folder applies it to all its tests with an autouse fixture that requests it (tests/engine,
    tests/models, tests/fuzz), a module with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    with set_torch_threads(1):
        yield
