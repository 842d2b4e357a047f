"""Random joint_motion_attention problems and their float64 reference results, shared by the tests of
the Triton kernels and of the CUDA source (GPU and CPU-emulated)."""

from __future__ import annotations

import torch

from jmipose.ops.joint_motion_attention import joint_motion_attention_reference

GRAD_NAMES = ("q_m", "k_m", "v_m", "q_j", "k_j", "v_j")

# Error bounds relative to the largest reference value of each tensor (see assert_close_scaled):
# (outputs and lse, gradients).  float32 kernels use exact float32 products and sums; float16/bfloat16
# kernels round the probabilities and dS to the input type before the second product (FlashAttention-2),
# and are compared with the reference evaluated on the same rounded inputs.
TOLERANCES = {torch.float32: (2e-5, 1e-4), torch.float16: (5e-3, 2e-2), torch.bfloat16: (4e-2, 1e-1)}


def make_problem(batch, heads, n_m, n_j, head_dim, *, residual="both", masks="both", seed=0):
    """Random float64 inputs; residual / masks in {"both", "m", "j", "none"}.  The masks drop ~30% of
    the keys but keep key 0, so no query row is fully masked unless a test asks for it."""
    gen = torch.Generator().manual_seed(seed)
    shape_m, shape_j = (batch, heads, n_m, head_dim), (batch, heads, n_j, head_dim)
    tensors = [torch.randn(s, generator=gen, dtype=torch.float64) for s in (shape_m,) * 3 + (shape_j,) * 3]
    res_m = torch.randn(shape_m, generator=gen, dtype=torch.float64) if residual in ("both", "m") else None
    res_j = torch.randn(shape_j, generator=gen, dtype=torch.float64) if residual in ("both", "j") else None
    mask_m = torch.rand(batch, n_m, generator=gen) < 0.3 if masks in ("both", "m") else None
    mask_j = torch.rand(batch, n_j, generator=gen) < 0.3 if masks in ("both", "j") else None
    for mask in (mask_m, mask_j):
        if mask is not None and mask.shape[1] > 0:
            mask[:, 0] = False
    grads = (torch.randn(shape_m, generator=gen, dtype=torch.float64),
             torch.randn(shape_j, generator=gen, dtype=torch.float64))
    return dict(tensors=tensors, res_m=res_m, res_j=res_j, mask_m=mask_m, mask_j=mask_j, grads=grads,
                scale=head_dim ** -0.5)


def rounded(problem, dtype):
    """The problem with every input rounded to dtype and back to float64: the exact target of a kernel
    that reads its inputs in that dtype."""
    def rnd(t):
        return None if t is None else t.to(dtype).double()

    out = dict(problem)
    out["tensors"] = [rnd(t) for t in problem["tensors"]]
    out["res_m"], out["res_j"] = rnd(problem["res_m"]), rnd(problem["res_j"])
    out["grads"] = tuple(rnd(g) for g in problem["grads"])
    return out


def _reference_lse(query, key, key_mask, scale):
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if key_mask is not None:
        scores = scores.masked_fill(key_mask[:, None, None, :], float("-inf"))
    return torch.logsumexp(scores, dim=-1)


def reference_results(problem):
    """float64 outputs, log-sum-exps and the six gradients of the eager reference."""
    leaves = [t.clone().requires_grad_(True) for t in problem["tensors"]]
    out_m, out_j = joint_motion_attention_reference(
        *leaves, res_m=problem["res_m"], res_j=problem["res_j"], scale=problem["scale"],
        mask_m=problem["mask_m"], mask_j=problem["mask_j"])
    torch.autograd.backward([out_m, out_j], list(problem["grads"]))
    q_m, k_m, _, q_j, k_j, _ = problem["tensors"]
    lse_m = _reference_lse(q_m, k_j, problem["mask_j"], problem["scale"])
    lse_j = _reference_lse(q_j, k_m, problem["mask_m"], problem["scale"])
    return dict(out=(out_m.detach(), out_j.detach()), lse=(lse_m, lse_j), grads=[t.grad for t in leaves])


def assert_close_scaled(actual, expected, rel, what):
    """|actual - expected| <= rel * max(max|expected|, 1), and no NaN."""
    actual = actual.detach().double().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{what}: NaN in the kernel's result"
    if expected.numel() == 0:
        return
    bound = rel * max(expected.abs().max().item(), 1.0)
    err = (actual - expected).abs().max().item()
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


def assert_matches_reference(got, problem, dtype, *, check_lse=True):
    """got: dict(out=(out_m, out_j), lse=(lse_m, lse_j), grads=[six]) from a kernel run on `problem`
    with inputs in `dtype`."""
    out_rel, grad_rel = TOLERANCES[dtype]
    expected = reference_results(problem if dtype == torch.float32 else rounded(problem, dtype))
    for name, a, e in zip(("out_m", "out_j"), got["out"], expected["out"]):
        assert a.dtype == dtype, f"{name} has dtype {a.dtype}"
        assert_close_scaled(a, e, out_rel, name)
    if check_lse:
        for name, a, e in zip(("lse_m", "lse_j"), got["lse"], expected["lse"]):
            assert a.dtype == torch.float32, f"{name} has dtype {a.dtype}"
            a = a.double().cpu()
            assert torch.equal(torch.isneginf(a), torch.isneginf(e)), f"{name}: the -inf rows differ"
            finite = torch.isfinite(e)
            assert_close_scaled(a[finite], e[finite], out_rel, name)
    for name, a, e in zip(GRAD_NAMES, got["grads"], expected["grads"]):
        assert_close_scaled(a, e, grad_rel, f"grad {name}")
