"""The C ABI table (jmipose/ops/_abi.py) against the C/CUDA sources and the built libraries.

The table is the one Python-side definition of every exported function: name, return type, parameter
names and C types in order, including the size arguments of both ops.  Here the ``JMIPOSE_API``
declarations are read from every header and source under csrc/ (object-like macros that stand for
parameter lists, such as JRG_SIZE_PARAMS, are expanded), so a parameter added, removed, renamed,
retyped or reordered on either side fails a test instead of becoming undefined behaviour; the built
libraries must export exactly the table's functions; and a call with a wrong argument count is a
TypeError before anything reaches C.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jmipose.ops import _abi, _backends
from tests.backends import require_backend

CSRC = Path(__file__).resolve().parents[2] / "csrc"
SOURCES = ("*.h", "*.cuh", "*.cpp", "*.cu")
_ABI_TAG = {"int64_t": "i64", "int32_t": "i32", "int": "int", "double": "f64"}


def _without_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _type_tag(c_type: str, where: str) -> str:
    c_type = " ".join(c_type.replace("const", " ").split())
    if c_type.endswith("*"):
        return "str" if c_type.replace(" ", "") == "char*" else "ptr"
    if c_type not in _ABI_TAG:
        raise AssertionError(f"{where}: C type {c_type!r} has no tag in jmipose/ops/_abi.py")
    return _ABI_TAG[c_type]


_TYPE_WORDS = {"const", "void", "char", "int", "double", "float", "int64_t", "int32_t", "uint8_t"}


def _split_parameter(text: str, where: str) -> tuple[str | None, str]:
    """(name, type tag) of one C parameter; the name is None where a declaration leaves it out."""
    text = text.strip()
    match = re.fullmatch(r"(.*?[\s*])(\w+)", text, flags=re.S)
    if match is None or match.group(2) in _TYPE_WORDS:
        return None, _type_tag(text, where)
    return match.group(2), _type_tag(match.group(1), where)


def _merge(first: tuple, second: tuple, where: str) -> tuple:
    """One signature from two declarations of a function: the same types, the same names where both
    give one (a header may leave names out)."""
    assert first[0] == second[0] and len(first[1]) == len(second[1]), f"{where} is declared twice differently"
    merged = []
    for (name_a, tag_a), (name_b, tag_b) in zip(first[1], second[1]):
        assert tag_a == tag_b and (name_a is None or name_b is None or name_a == name_b), \
            f"{where} is declared twice differently: {first} vs {second}"
        merged.append((name_a or name_b, tag_a))
    return first[0], tuple(merged)


def c_declarations() -> dict[str, dict[str, tuple[str, tuple[tuple[str, str], ...]]]]:
    """{library: {function: (return tag, ((name, tag), ...))}} from the JMIPOSE_API declarations of
    every file under csrc (a function declared twice, say in a header and its source, must agree on
    the types, and on the names where both give them)."""
    files = sorted({p for pattern in SOURCES for p in CSRC.rglob(pattern)})
    texts = {p: _without_comments(p.read_text()) for p in files}
    macros = {}
    for text in texts.values():
        for match in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+((?:[^\n\\]|\\\n|\\.)*)", text, flags=re.M):
            macros[match.group(1)] = " ".join(match.group(2).replace("\\\n", " ").split())
    found: dict[str, dict[str, tuple]] = {"cpu": {}, "cuda": {}}
    pattern = re.compile(r"\bJMIPOSE_API\s+([\w\s\*]+?)\s*\b(jmipose_\w+)\s*\(([^()]*)\)")
    for path, text in texts.items():
        for match in pattern.finditer(text):
            restype, name, parameter_text = match.groups()
            where = f"{path.relative_to(CSRC.parent)}: {name}"
            pieces = []
            for piece in (p.strip() for p in parameter_text.split(",")):
                pieces += [p.strip() for p in macros[piece].split(",")] if piece in macros else [piece]
            pieces = [p for p in pieces if p and p != "void"]
            signature = (_type_tag(restype, where), tuple(_split_parameter(p, where) for p in pieces))
            library = "cuda" if "_cuda" in name else "cpu"
            previous = found[library].get(name)
            found[library][name] = signature if previous is None else _merge(previous, signature, where)
    return found


def test_the_table_matches_the_c_declarations():
    declared = c_declarations()
    assert declared["cpu"] and declared["cuda"], "no JMIPOSE_API declarations found under csrc/"
    for library in ("cpu", "cuda"):
        assert sorted(_abi.FUNCTIONS[library]) == sorted(declared[library]), library
        for name, (restype, parameters) in _abi.FUNCTIONS[library].items():
            c_restype, c_parameters = declared[library][name]
            assert restype == c_restype, f"{name}: return type"
            same = len(parameters) == len(c_parameters) and all(
                tag == c_tag and c_name in (None, table_name)
                for (table_name, tag), (c_name, c_tag) in zip(parameters, c_parameters))
            assert same, f"{name}: the parameters differ\n table: {parameters}\n C:     {c_parameters}"


def test_size_arguments_have_one_order():
    """The ops' size arguments are the C parameters named in the table, in its order."""
    declared = c_declarations()
    forward_a = [n for n, tag in declared["cpu"]["jmipose_joint_region_gather_forward_cpu"][1] if tag == "i64"]
    forward_b = [n for n, tag in declared["cpu"]["jmipose_joint_motion_attention_forward_cpu"][1] if tag == "i64"]
    assert tuple(forward_a) == _abi.JOINT_REGION_GATHER_SIZES
    assert tuple(forward_b) == _abi.JOINT_MOTION_ATTENTION_SIZES


def test_ops_build_their_sizes_in_the_table_order():
    gather = sys.modules["jmipose.ops.joint_region_gather"]
    attention = sys.modules["jmipose.ops.joint_motion_attention"]
    # every size distinct, so a swap shows
    x, weight = torch.empty(2, 6, 7, 9), torch.empty(4, 3, 3, 2)
    stride, padding, dilation = (2, 1), (1, 0), (1, 2)
    out_h, out_w = (7 + 2 - 2 - 1) // 2 + 1, (9 + 0 - 2 - 1) // 1 + 1
    offset = torch.empty(2, 2 * 3 * 6, out_h, out_w)  # 3 offset groups
    expected = {"batch": 2, "in_channels": 6, "height": 7, "width": 9, "out_channels": 4, "kernel_h": 3,
                "kernel_w": 2, "out_h": out_h, "out_w": out_w, "stride_h": 2, "stride_w": 1, "pad_h": 1, "pad_w": 0,
                "dil_h": 1, "dil_w": 2, "groups": 2, "offset_groups": 3}
    sizes = gather._size_args(x, offset, weight, stride, padding, dilation)
    assert dict(zip(_abi.JOINT_REGION_GATHER_SIZES, sizes, strict=True)) == expected
    q_m, q_j = torch.empty(3, 5, 11, 16), torch.empty(3, 5, 13, 16)
    sizes = attention._size_args(q_m, q_j)
    assert dict(zip(_abi.JOINT_MOTION_ATTENTION_SIZES, sizes, strict=True)) == {
        "batch": 3, "heads": 5, "n_m": 11, "n_j": 13, "head_dim": 16}


def _exported(path: Path) -> set[str]:
    if shutil.which("nm") is None:
        pytest.skip("no nm to list the library's exported symbols")
    listing = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True,
                             check=True).stdout
    return {line.split()[-1] for line in listing.splitlines() if line.split()[-1].startswith("jmipose_")}


@pytest.mark.parametrize("library", ["cpu", "cuda"])
def test_built_libraries_export_exactly_the_table(library):
    path = _backends.CPU_LIB_PATH if library == "cpu" else _backends.CUDA_LIB_PATH
    if library == "cpu":
        require_backend("cpp")
    elif not path.exists():
        pytest.skip(f"{path.name} was not built here")
    assert _exported(path) == set(_abi.FUNCTIONS[library])
    functions = _abi.bind(ctypes.CDLL(str(path)), library)
    assert functions[f"jmipose_{library}_abi_version"]() == _backends.ABI_VERSION


def test_a_wrong_argument_count_is_a_type_error():
    require_backend("cpp")
    x, off, w, out = torch.zeros(1, 4, 5, 5), torch.zeros(1, 18, 5, 5), torch.zeros(6, 4, 3, 3), torch.zeros(1, 6, 5, 5)
    sizes = [1, 4, 5, 5, 6, 3, 3, 5, 5, 1, 1, 1, 1, 1, 1, 1, 1]
    args = [_backends.ptr(t) for t in (x, off, None, w, None, out)] + sizes + [0]
    _backends.call_cpu("jmipose_joint_region_gather_forward_cpu", *args)  # the right count runs
    for wrong in (args[:-1], args + [0], []):
        with pytest.raises(TypeError, match=r"jmipose_joint_region_gather_forward_cpu takes 24 arguments "
                                            rf"\(input, offset, .*, dtype\), got {len(wrong)}"):
            _backends.call_cpu("jmipose_joint_region_gather_forward_cpu", *wrong)
    with pytest.raises(ctypes.ArgumentError):  # ctypes checks each declared type too
        _backends.call_cpu("jmipose_joint_region_gather_forward_cpu", *args[:-1], 0.5)
    functions = _backends.c_functions("cpu")
    with pytest.raises(TypeError, match="jmipose_cpu_abi_version takes 0 arguments"):
        functions["jmipose_cpu_abi_version"](1)
