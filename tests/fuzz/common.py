"""Shared by the op fuzzers: the example budget, memory layouts that hand the ops non-contiguous and
misaligned views, non-finite sprinkles, the comparison rule against the float64 reference, and the
invalid-call harness (a valid call corrupted one way must raise the documented error).

Budget: ``JMIPOSE_FUZZ_EXAMPLES`` hypothesis examples per test and backend (default 30: the default
run stays around a minute); the Triton interpreter on the CPU gets a fifth of it (at least 3), its
launches cost ~0.1 s each.  The full job (``JMIPOSE_FUZZ_EXAMPLES=1000 pytest -m fuzz tests/fuzz``)
draws at least 1,000 cases per op and backend.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("JMIPOSE_FUZZ_EXAMPLES", "30"))

# Where a backend reads tensors in a dtype, its result is compared with the float64 reference on the
# same dtype-rounded inputs: |got - want| <= tol * max(1, max |want|) (outputs and gradients).
TOLERANCE = {torch.float64: 1e-9, torch.float32: 3e-4, torch.float16: 2e-2, torch.bfloat16: 8e-2}

# How a test tensor is laid out in memory before it is handed to the op.
LAYOUTS = ("contiguous", "transposed", "channels_last", "strided", "storage_offset", "broadcast_copy")


def budget(backend: str, device: torch.device) -> int:
    if backend == "triton" and device.type == "cpu":
        return max(3, FUZZ_EXAMPLES // 5)
    return FUZZ_EXAMPLES


def dtypes_for(backend: str, device: torch.device, op_dtypes: dict) -> list[torch.dtype]:
    """The dtypes a backend computes; the CPU Triton interpreter gets float32 only (it is slow)."""
    if backend == "triton" and device.type == "cpu":
        return [torch.float32]
    allowed = list(op_dtypes[backend])
    if device.type == "cuda" and backend == "reference":
        return [d for d in allowed if d in (torch.float32, torch.float64)]
    return allowed


def lay_out(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``tensor`` in another memory layout (a leaf that requires no grad).

    transposed: last two dims swapped in memory; channels_last: NHWC strides (4-D only);
    strided: every other element of a buffer twice as wide (stride 2 on the last dim);
    storage_offset: a contiguous view starting one element into its buffer, so its data pointer is
    misaligned for every vector width (what SIMD loads and the sanitizers must survive);
    broadcast_copy: an ``expand`` of a size-1 leading dim, made into a real view (stride 0 on dim 0)
    when the batch is 1.
    """
    if layout == "transposed" and tensor.dim() >= 2:
        return tensor.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "channels_last" and tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    if layout == "strided" and tensor.dim() >= 1:
        wide = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1] + 1, dtype=tensor.dtype, device=tensor.device)
        view = wide[..., 1::2][..., :tensor.shape[-1]]
        view.copy_(tensor)
        return view
    if layout == "storage_offset":
        buffer = torch.zeros(tensor.numel() + 1, dtype=tensor.dtype, device=tensor.device)
        view = buffer[1:].view(tensor.shape)
        view.copy_(tensor)
        return view
    if layout == "broadcast_copy" and tensor.dim() >= 1 and tensor.shape[0] == 1:
        return tensor[:1].expand(tensor.shape)
    return tensor.clone()


def sprinkle(tensor: torch.Tensor, values: list[float], fraction: float, seed: int) -> torch.Tensor:
    """A copy of ``tensor`` with about ``fraction`` of its entries replaced by the given values."""
    out = tensor.clone()
    if out.numel() == 0 or fraction <= 0 or not values:
        return out
    gen = torch.Generator().manual_seed(seed)
    flat = out.view(-1)
    count = max(1, int(flat.numel() * fraction))
    picks = torch.randperm(flat.numel(), generator=gen)[:count]
    choices = torch.tensor(values, dtype=torch.float64)[torch.randint(len(values), (count,), generator=gen)]
    flat[picks] = choices.to(out.dtype)
    return out


NON_FINITE = [float("nan"), float("inf"), float("-inf")]
HUGE = [1e30, -1e30, 3e38, -3e38, 1e6 + 0.5, -(2.0 ** 31), 2.0 ** 31, 2.0 ** 63]


def assert_matches(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str,
                   nonfinite_inputs: bool = False, gradient: bool = False) -> None:
    """``got`` equals the float64 reference ``want`` within the dtype's tolerance.

    With finite inputs both must be finite and close.  With non-finite input values the reference is
    the judge where it is finite (there an output must be finite and close); where the reference
    itself is NaN/inf (0 * inf, inf - inf in its sums) a backend may differ, it only must not crash.
    Gradients with non-finite inputs are compared where both are finite: whether a NaN pixel reaches
    a gradient through a zero bilinear weight (0 * NaN) depends on the order of operations, which
    no backend promises."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    got = got.detach().double().cpu()
    finite = torch.isfinite(want)
    if not nonfinite_inputs:
        assert finite.all(), f"{what}: the reference is not finite on finite inputs"
    if not finite.any():
        return
    if nonfinite_inputs and gradient:
        finite &= torch.isfinite(got)
        if not finite.any():
            return
    expected, actual = want[finite], got[finite]
    assert torch.isfinite(actual).all(), f"{what}: non-finite values where the reference is finite"
    tol = TOLERANCE[dtype]
    bound = tol * max(1.0, expected.abs().max().item())
    err = (actual - expected).abs().max().item()
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g} ({dtype})"


def assert_gradients_match(got: dict, want: dict, dtype, backend: str, nonfinite: bool) -> None:
    """Every gradient of a fuzzed call has the input dtype and matches the reference's."""
    for name, grad in got.items():
        assert grad.dtype == dtype, name
        assert_matches(grad, want[name], dtype, f"{backend} grad {name}", nonfinite, gradient=True)


class Tally:
    """Counts what the examples of one test covered; with ``JMIPOSE_FUZZ_REPORT=<file>`` a JSON line per
    test is appended there (how docs/RELIABILITY.md's table was made)."""

    def __init__(self, test: str):
        self.test, self.counts = test, {"examples": 0}

    def add(self, dtype: torch.dtype, layouts: dict[str, str], *features: str, **flags: bool) -> None:
        """One example: its dtype, the memory layouts its tensors had, the op's own ``features``, and
        the name of each of ``flags`` that is true."""
        self.counts["examples"] += 1
        layout_features = (f"layout_{layout}" for layout in set(layouts.values()))
        flagged = (name for name, value in flags.items() if value)
        for feature in (str(dtype).replace("torch.", ""), *layout_features, *features, *flagged):
            self.counts[feature] = self.counts.get(feature, 0) + 1

    def write(self) -> None:
        path = os.environ.get("JMIPOSE_FUZZ_REPORT")
        if path:
            import json

            with open(path, "a") as handle:
                handle.write(json.dumps({"test": self.test, **self.counts}) + "\n")


seeds = st.integers(0, 2 ** 31 - 1)


# ---------------------------------------------------------------------------------------------
# Invalid calls.  A corruption is (apply, the text the error must name, the error type); apply
# changes one argument of a valid call, given as a dict of the op's arguments.

INVALID_CALL_BACKENDS = ("reference", "cpp", None)  # None: the op picks the backend


def set_argument(name: str, value):
    """Argument ``name`` replaced by ``value``, or by ``value(old)`` when ``value`` is callable."""
    def apply(call: dict) -> None:
        call[name] = value(call[name]) if callable(value) else value
    return apply


def resize_argument(name: str, dim: int, delta: int):
    """Tensor ``name`` replaced by zeros of its dtype with ``delta`` more entries along ``dim`` (>= 0)."""
    def apply(call: dict) -> None:
        shape = list(call[name].shape)
        shape[dim] = max(0, shape[dim] + delta)
        call[name] = torch.zeros(shape, dtype=call[name].dtype)
    return apply


def not_a_float_tensor(name: str) -> list[tuple]:
    """Tensor ``name`` as int64 and as a nested list: both a TypeError naming it."""
    return [(set_argument(name, lambda t: t.long()), name, TypeError),
            (set_argument(name, lambda t: t.tolist()), name, TypeError)]


def invalid_call_examples(corruptions: list[tuple]):
    """The hypothesis settings and strategies of an invalid-call fuzzer, whose arguments are
    ``index`` (into ``corruptions``), ``seed`` (of the valid call) and ``backend``."""
    def decorate(test):
        drawn = given(index=st.integers(0, len(corruptions) - 1), seed=seeds,
                      backend=st.sampled_from(INVALID_CALL_BACKENDS))(test)
        return settings(max_examples=max(10, budget("cpp", torch.device("cpu"))), deadline=None)(drawn)
    return decorate


def assert_documented_error(op: str, corruption: tuple, call: dict, run) -> None:
    """``run(call)`` on the corrupted ``call`` raises the corruption's error type, and the message
    starts with the op's name and names the argument."""
    corrupt, argument, error = corruption
    corrupt(call)
    with pytest.raises(error) as raised:
        run(call)
    message = str(raised.value)
    assert message.startswith(f"{op}:") and argument in message, message
