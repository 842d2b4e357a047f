"""Benchmark cases of op B, ``joint_motion_attention`` (both cross-attention directions, residuals).

Shapes are the model's (issue: B in {8, 32}, (h, d) in {(1, 48), (4, 16)}, N_m = N_j = N in
{1,728 (48x36), 6,912 (96x72)}); float32 on the CPU, bfloat16 on a GPU.  Each runs on our
backends of the device, the eager reference (which materialises the N x N scores), ``torch.compile``
of it, and two calls of ``scaled_dot_product_attention`` plus the residual adds (the SDPA pair).
Eager variants whose score matrices would not fit in memory are skipped with the estimate, and so
are CPU cases above a FLOP budget per call (they would take minutes each on a few cores).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jmipose.bench import roofline
from jmipose.bench.timing import PASSES, Case, op_implementation, our_implementations

OP = "joint_motion_attention"
VARIANT = "both directions"
TARGET_SHAPE = {"B": 8, "h": 1, "N_m": 1728, "N_j": 1728, "d": 48}
GPU_TARGET_SHAPE = {"B": 32, "h": 1, "N_m": 6912, "N_j": 6912, "d": 48}
# Peak memory must grow linearly in N: the same (B, h, d) at two N, cheap enough for --quick.
LINEARITY_SHAPES = [{"B": 1, "h": 1, "N_m": n, "N_j": n, "d": 48} for n in (1728, 6912)]
SMALLEST_SHAPES = [{"B": 1, "h": 1, "N_m": n, "N_j": n, "d": 16} for n in (64, 256)]


def model_shapes() -> list[dict[str, int]]:
    return [{"B": b, "h": h, "N_m": n, "N_j": n, "d": d}
            for b in (8, 32) for h, d in ((1, 48), (4, 16)) for n in (1728, 6912)]


def shapes(quick: bool = False, smallest: bool = False) -> list[tuple[dict[str, int], tuple[str, ...]]]:
    """(shape, passes) pairs; quick: the CPU target (forward+backward) and the memory-linearity pair
    (forward)."""
    if smallest:
        return [(dict(s), PASSES) for s in SMALLEST_SHAPES]
    if quick:
        return [(dict(TARGET_SHAPE), ("fwd+bwd",))] + [(dict(s), ("fwd",)) for s in LINEARITY_SHAPES]
    # the target first (a run cut short still has it), then the linearity pair, then the rest
    rest = [s for s in model_shapes() if s != TARGET_SHAPE]
    return [(dict(TARGET_SHAPE), PASSES[::-1])] + [(s, PASSES) for s in LINEARITY_SHAPES + rest]


def eager_bytes(shape: dict[str, int], pass_: str) -> float:
    """Rough peak of the eager reference: float32 score-sized matrices alive at once (2 without
    autograd; scores, probabilities and their gradients of both directions with it)."""
    matrices = 2 if pass_ == "fwd" else 6
    return matrices * 4.0 * shape["B"] * shape["h"] * shape["N_m"] * shape["N_j"]


def memory_budget(device: str) -> float:
    """Bytes an eager variant may use: 60% of the free GPU memory, or 40% of the available RAM (<= 8 GB)."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return 0.6 * free
    try:
        with open("/proc/meminfo") as f:
            available_kb = int(next(line for line in f if line.startswith("MemAvailable")).split()[1])
        return min(0.4 * available_kb * 1024, 8e9)
    except (OSError, StopIteration, ValueError):
        return 4e9


def sdpa_pair(q_m, k_m, v_m, q_j, k_j, v_j, *, res_m, res_j):
    """The baseline: PyTorch's fused attention once per direction, residuals added outside."""
    return (res_m + F.scaled_dot_product_attention(q_m, k_j, v_j),
            res_j + F.scaled_dot_product_attention(q_j, k_m, v_m))


class AttentionRunner:
    """One pass of one implementation on inputs built once (``jmipose.bench.timing.Runner``)."""

    def __init__(self, fn, shape: dict[str, int], pass_: str, dtype: str, device: str) -> None:
        gen = torch.Generator().manual_seed(0)
        dt, dev = getattr(torch, dtype), torch.device(device)
        self.backward = pass_ == "fwd+bwd"

        def tensor(tokens: int) -> torch.Tensor:
            values = torch.randn(shape["B"], shape["h"], tokens, shape["d"], generator=gen)
            return values.to(dev, dt).requires_grad_(self.backward)

        sizes = (shape["N_m"],) * 3 + (shape["N_j"],) * 3
        self.tokens = [tensor(n) for n in sizes]
        self.residuals = [tensor(shape["N_m"]), tensor(shape["N_j"])]
        self.grad_outputs = [torch.randn_like(r) for r in self.residuals]
        self.fn = fn

    def reset(self) -> None:
        for leaf in self.tokens + self.residuals:
            leaf.grad = None

    def __call__(self):
        kwargs = {"res_m": self.residuals[0], "res_j": self.residuals[1]}
        if not self.backward:
            with torch.no_grad():
                return self.fn(*self.tokens, **kwargs)
        self.reset()
        outputs = self.fn(*self.tokens, **kwargs)
        torch.autograd.backward(outputs, self.grad_outputs)
        return outputs


def _implementation(backend: str, baseline: str):
    from jmipose.ops import joint_motion_attention
    from jmipose.ops.joint_motion_attention import joint_motion_attention_reference

    if baseline == "sdpa":
        return sdpa_pair
    return op_implementation(joint_motion_attention, joint_motion_attention_reference, backend, baseline)


def implementations(device: str) -> list[tuple[str, str, str | None]]:
    """(backend, baseline, skip reason) of every implementation benchmarked on ``device``."""
    return our_implementations(device) + [("sdpa", "sdpa", None)]


def cases(device: str = "cpu", quick: bool = False, smallest: bool = False, compile_baseline: bool = True,
          cpu_gflop: float = 150.0) -> list[Case]:
    """One Case per (shape, pass, implementation); see the module docstring for what is skipped."""
    dtype = "float32" if device == "cpu" else "bfloat16"
    budget = memory_budget(device)
    result = []
    for shape, passes in shapes(quick, smallest):
        for pass_ in passes:
            flops = roofline.motion_attention_flops(shape, pass_)
            for backend, baseline, skip in implementations(device):
                if skip is None and device == "cpu" and flops > cpu_gflop * 1e9:
                    skip = f"{flops / 1e9:.0f} GFLOP per call exceeds the CPU budget of {cpu_gflop:.0f} GFLOP"
                if skip is None and baseline in ("eager", "compile") and eager_bytes(shape, pass_) > budget:
                    skip = (f"eager scores need ~{eager_bytes(shape, pass_) / 1e9:.1f} GB "
                            f"(budget {budget / 1e9:.1f} GB)")
                if skip is None and baseline == "compile" and not compile_baseline:
                    skip = "torch.compile baseline not requested (--no-compile)"

                def make(backend=backend, baseline=baseline, shape=shape, pass_=pass_):
                    return AttentionRunner(_implementation(backend, baseline), shape, pass_, dtype, device)

                result.append(Case(OP, VARIANT, pass_, backend, baseline, dict(shape), dtype, device,
                                   make=None if skip else make, skip=skip, flops=flops,
                                   bytes_moved=roofline.motion_attention_bytes(shape, pass_, dtype)))
    return result
