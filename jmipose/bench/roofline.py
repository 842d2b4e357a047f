"""Work and traffic of the two ops, and achieved throughput against a device's peak.

FLOPs count the useful arithmetic (2 per multiply-add) whatever an implementation really executes:

- joint_region_gather forward: ``2 B Cout (Cin/groups) k^2 Hout Wout`` (the reduction with the
  weights; bilinear sampling is not counted, as usual for convolutions).  Forward+backward: 3x
  forward (backward = the gradient of the sampled columns, from which input/offset/mask gradients
  follow, plus the weight gradient: two products of the forward's size).
- joint_motion_attention forward: ``8 B h N_m N_j d`` (two directions, two products each).
  Forward+backward: 3.5x forward (backward recomputes the scores and runs four products per
  direction: 2.5x forward).

Bytes count the compulsory traffic: every input read once and every output written once, in the
tensors' dtype (statistics such as the log-sum-exp in float32).  Achieved bandwidth = bytes /
time is therefore a lower bound on what the kernel really moved.
"""

from __future__ import annotations

from typing import Any

# Dense peaks by device name (first match wins, so specific names come first): tensor-core
# bfloat16/float16 TFLOP/s, float32 TFLOP/s without tensor cores, memory bandwidth GB/s.
DEVICE_PEAKS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"half_tflops": 756.0, "float_tflops": 51.0, "bandwidth_gbs": 2000.0}),
    ("H100 NVL", {"half_tflops": 835.0, "float_tflops": 60.0, "bandwidth_gbs": 3900.0}),
    ("H100", {"half_tflops": 989.0, "float_tflops": 67.0, "bandwidth_gbs": 3350.0}),
    ("H200", {"half_tflops": 989.0, "float_tflops": 67.0, "bandwidth_gbs": 4800.0}),
    ("A100-SXM4-40GB", {"half_tflops": 312.0, "float_tflops": 19.5, "bandwidth_gbs": 1555.0}),
    ("A100", {"half_tflops": 312.0, "float_tflops": 19.5, "bandwidth_gbs": 2039.0}),
    ("L40S", {"half_tflops": 362.0, "float_tflops": 91.6, "bandwidth_gbs": 864.0}),
    ("L4", {"half_tflops": 121.0, "float_tflops": 30.3, "bandwidth_gbs": 300.0}),
]

ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def device_peak(device_name: str | None, dtype: str) -> tuple[float, float] | None:
    """(peak TFLOP/s for ``dtype``, peak GB/s) of a GPU by name, or None when it is not in the table."""
    if not device_name:
        return None
    for key, peaks in DEVICE_PEAKS:
        if key in device_name:
            tflops = peaks["half_tflops"] if dtype in ("float16", "bfloat16") else peaks["float_tflops"]
            return tflops, peaks["bandwidth_gbs"]
    return None


def achieved(flops: float | None, bytes_moved: float | None, seconds: float | None,
             peak: tuple[float, float] | None = None) -> dict[str, float | None]:
    """TFLOP/s, GB/s and their fractions of ``peak`` (None where an input is missing)."""
    result: dict[str, float | None] = {"tflops": None, "bandwidth_gbs": None,
                                       "tflops_fraction": None, "bandwidth_fraction": None}
    if not seconds or seconds <= 0:
        return result
    if flops is not None:
        result["tflops"] = flops / seconds / 1e12
    if bytes_moved is not None:
        result["bandwidth_gbs"] = bytes_moved / seconds / 1e9
    if peak is not None:
        if result["tflops"] is not None:
            result["tflops_fraction"] = result["tflops"] / peak[0]
        if result["bandwidth_gbs"] is not None:
            result["bandwidth_fraction"] = result["bandwidth_gbs"] / peak[1]
    return result


def region_gather_flops(shape: dict[str, Any], pass_: str) -> float:
    """Shape keys: batch, in_channels, out_channels, groups, kernel, out_h, out_w."""
    forward = (2.0 * shape["batch"] * shape["out_channels"] * (shape["in_channels"] // shape.get("groups", 1))
               * shape["kernel"] ** 2 * shape["out_h"] * shape["out_w"])
    return forward * (3.0 if pass_ == "fwd+bwd" else 1.0)


def region_gather_bytes(shape: dict[str, Any], pass_: str, dtype: str) -> float:
    """Inputs (input, offset, mask, weight, bias) read and the output written; with backward also
    grad_output read, the forward inputs read again and one gradient per input written."""
    b, k2 = shape["batch"], shape["kernel"] ** 2
    g = shape.get("offset_groups", 1)
    pixels_out = shape["out_h"] * shape["out_w"]
    input_el = b * shape["in_channels"] * shape["height"] * shape["width"]
    offset_el = b * 2 * g * k2 * pixels_out
    mask_el = b * g * k2 * pixels_out
    weight_el = shape["out_channels"] * (shape["in_channels"] // shape.get("groups", 1)) * k2
    bias_el = shape["out_channels"]
    output_el = b * shape["out_channels"] * pixels_out
    inputs = input_el + offset_el + mask_el + weight_el + bias_el
    elements = inputs + output_el
    if pass_ == "fwd+bwd":
        elements += output_el + inputs + inputs  # grad_output; inputs again; their gradients
    return float(elements * ITEMSIZE[dtype])


def motion_attention_flops(shape: dict[str, Any], pass_: str) -> float:
    """Shape keys: B, h, N_m, N_j, d."""
    forward = 8.0 * shape["B"] * shape["h"] * shape["N_m"] * shape["N_j"] * shape["d"]
    return forward * (3.5 if pass_ == "fwd+bwd" else 1.0)


def motion_attention_bytes(shape: dict[str, Any], pass_: str, dtype: str) -> float:
    """Forward: q, k, v of both sides and two residuals read, two outputs written, float32 log-sum-exp
    written.  Backward: two output gradients, q/k/v, outputs and log-sum-exp read, six gradients
    written."""
    b, h, d = shape["B"], shape["h"], shape["d"]
    side_m, side_j = b * h * shape["N_m"] * d, b * h * shape["N_j"] * d
    lse = 4.0 * b * h * (shape["N_m"] + shape["N_j"])
    per_side = side_m + side_j
    forward = ITEMSIZE[dtype] * (3 * per_side + per_side + per_side) + lse  # qkv, residuals, outputs
    if pass_ != "fwd+bwd":
        return forward
    backward = ITEMSIZE[dtype] * (per_side + 3 * per_side + per_side + 3 * per_side) + lse
    return forward + backward
