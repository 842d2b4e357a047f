"""The C ABI of ``libjmipose_cpu.so`` and ``libjmipose_cuda.so``, declared once.

``FUNCTIONS`` lists every function the libraries export (the ``JMIPOSE_API`` declarations under
``csrc/``): its return type and its parameters, name and C type, in order.  ``bind`` gives a library
its ctypes ``argtypes``/``restype`` from this table when ``jmipose.ops._backends`` loads it, and
wraps each function in a ``CFunction`` that refuses a wrong argument count with a ``TypeError``
before anything reaches C (ctypes alone lets a cdecl function take surplus arguments, which C then
reads as garbage or not at all).

The size arguments of the two ops are named here once (``JOINT_REGION_GATHER_SIZES``,
``JOINT_MOTION_ATTENTION_SIZES``); the ops build them with ``size_getter`` from a name -> value
mapping, so their order has one home on the Python side.  ``tests/ops/test_abi.py`` parses the
``JMIPOSE_API`` declarations of the C/CUDA sources and checks them against this table, name for
name and type for type, and that each built library exports every function listed here.

Type tags: ``ptr`` (any data pointer, passed as an ``int`` address or ``None`` for NULL), ``i64``
(int64_t), ``i32`` (int32_t), ``int`` (C int), ``f64`` (double), ``str`` (const char*, returns only).
"""

from __future__ import annotations

import ctypes
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

CTYPES = {"ptr": ctypes.c_void_p, "i64": ctypes.c_int64, "i32": ctypes.c_int32, "int": ctypes.c_int,
          "f64": ctypes.c_double, "str": ctypes.c_char_p}

# Op A: the int64 sizes after the pointers (csrc/joint_region_gather: JRG_SIZE_PARAMS).
JOINT_REGION_GATHER_SIZES = ("batch", "in_channels", "height", "width", "out_channels", "kernel_h", "kernel_w",
                             "out_h", "out_w", "stride_h", "stride_w", "pad_h", "pad_w", "dil_h", "dil_w", "groups",
                             "offset_groups")
# Op B: the int64 sizes after the pointers (csrc/joint_motion_attention).
JOINT_MOTION_ATTENTION_SIZES = ("batch", "heads", "n_m", "n_j", "head_dim")

Parameters = tuple[tuple[str, str], ...]


def _pointers(*names: str) -> Parameters:
    return tuple((name, "ptr") for name in names)


def _int64s(names: Sequence[str]) -> Parameters:
    return tuple((name, "i64") for name in names)


_DTYPE = (("dtype", "i32"),)
_CUDA_LAUNCH = (("device", "i32"), ("stream", "ptr"))  # device index, the cudaStream_t to launch on

_GATHER_FORWARD = (_pointers("input", "offset", "mask", "weight", "bias", "output")
                   + _int64s(JOINT_REGION_GATHER_SIZES) + _DTYPE)
_GATHER_BACKWARD = (_pointers("grad_output", "input", "offset", "mask", "weight", "grad_input", "grad_offset",
                              "grad_mask", "grad_weight", "grad_bias")
                    + _int64s(JOINT_REGION_GATHER_SIZES) + _DTYPE)
_ATTENTION_FORWARD = (_pointers("q_m", "k_m", "v_m", "q_j", "k_j", "v_j", "res_m", "res_j", "mask_m", "mask_j",
                                "out_m", "out_j", "lse_m", "lse_j")
                      + _int64s(JOINT_MOTION_ATTENTION_SIZES) + (("scale", "f64"),) + _DTYPE)
_ATTENTION_BACKWARD = (_pointers("grad_out_m", "grad_out_j", "q_m", "k_m", "v_m", "q_j", "k_j", "v_j", "out_m",
                                 "out_j", "res_m", "res_j", "mask_m", "mask_j", "lse_m", "lse_j", "grad_q_m",
                                 "grad_k_m", "grad_v_m", "grad_q_j", "grad_k_j", "grad_v_j")
                       + _int64s(JOINT_MOTION_ATTENTION_SIZES) + (("scale", "f64"),) + _DTYPE)

# library ("cpu" or "cuda") -> function name -> (return type, parameters)
FUNCTIONS: dict[str, dict[str, tuple[str, Parameters]]] = {
    "cpu": {
        "jmipose_cpu_abi_version": ("int", ()),
        "jmipose_cpu_last_error": ("str", ()),
        "jmipose_cpu_max_threads": ("int", ()),
        "jmipose_joint_region_gather_forward_cpu": ("int", _GATHER_FORWARD),
        "jmipose_joint_region_gather_backward_cpu": ("int", _GATHER_BACKWARD),
        "jmipose_joint_motion_attention_forward_cpu": ("int", _ATTENTION_FORWARD),
        "jmipose_joint_motion_attention_backward_cpu": ("int", _ATTENTION_BACKWARD),
    },
    "cuda": {
        "jmipose_cuda_abi_version": ("int", ()),
        "jmipose_cuda_last_error": ("str", ()),
        "jmipose_cuda_device_count": ("int", _pointers("count")),
        "jmipose_cuda_runtime_version": ("int", _pointers("version")),
        "jmipose_joint_region_gather_forward_cuda": ("int", _GATHER_FORWARD + _CUDA_LAUNCH),
        "jmipose_joint_region_gather_backward_cuda": ("int", _GATHER_BACKWARD + _CUDA_LAUNCH),
        "jmipose_joint_motion_attention_forward_cuda": ("int", _ATTENTION_FORWARD + _CUDA_LAUNCH),
        "jmipose_joint_motion_attention_backward_cuda": ("int", _ATTENTION_BACKWARD + _CUDA_LAUNCH),
    },
}


class CFunction:
    """One exported C function with its declared signature; calling it with another number of
    arguments than declared raises ``TypeError`` (ctypes converts and type-checks each argument)."""

    __slots__ = ("name", "parameters", "_function", "_count")

    def __init__(self, library: ctypes.CDLL, name: str, restype: str, parameters: Parameters) -> None:
        function = getattr(library, name)  # AttributeError: the library does not export it
        function.argtypes = [CTYPES[tag] for _, tag in parameters]
        function.restype = CTYPES[restype]
        self.name = name
        self.parameters = parameters
        self._function = function
        self._count = len(parameters)

    def __call__(self, *args: Any) -> Any:
        if len(args) != self._count:
            names = ", ".join(name for name, _ in self.parameters)
            raise TypeError(f"{self.name} takes {self._count} arguments ({names}), got {len(args)}")
        return self._function(*args)

    def __repr__(self) -> str:
        return f"CFunction({self.name}({', '.join(f'{t} {n}' for n, t in self.parameters)}))"


def bind(library: ctypes.CDLL, which: str, names: Sequence[str] | None = None) -> dict[str, CFunction]:
    """The functions ``names`` (default: all) of ``FUNCTIONS[which]`` bound in ``library``;
    AttributeError names one the library does not export."""
    table = FUNCTIONS[which]
    return {name: CFunction(library, name, *table[name]) for name in (table if names is None else names)}


def size_getter(names: Sequence[str]) -> Callable[[Mapping[str, int]], tuple[int, ...]]:
    """A function that picks ``names`` out of a mapping, in that order (the C ABI's order)."""
    return operator.itemgetter(*names)
