"""The rule of the house (docs/ARCHITECTURE.md): model code calls ``jmipose.ops`` (or the layers of
``jmipose.nn``), never a backend.  Every module of the package is parsed; only the ops, the benchmark
engine (it measures the backends on purpose) and ``jmipose.info`` (it reports them) may import the
Triton kernels, the backend dispatch, the ctypes ABI table, the compiled library or ctypes itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jmipose"

# what counts as reaching a backend
BACKEND_MODULES = ("jmipose.kernels", "jmipose.ops._backends", "jmipose.ops._abi", "jmipose._lib", "ctypes",
                   "triton")
# who may: the ops themselves, the Triton kernels, the benchmark engine, the environment report
ALLOWED = ("jmipose/ops/", "jmipose/kernels/", "jmipose/bench/", "jmipose/info.py")


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """Every module an ``import`` / ``from ... import`` in ``tree`` names, absolute, with its line; a
    ``from jmipose.ops import _backends`` counts as ``jmipose.ops._backends``."""
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _reaches_backend(name: str) -> bool:
    return any(name == b or name.startswith(b + ".") for b in BACKEND_MODULES)


def _sources():
    root = PACKAGE.parent
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        yield relative, ".".join(path.relative_to(root).with_suffix("").parts), path


def test_only_the_ops_reach_a_backend():
    offenders = []
    for relative, module, path in _sources():
        if relative.startswith(ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
        offenders += [f"{relative}:{line} imports {name}" for line, name in _imports(tree, module)
                      if _reaches_backend(name)]
    assert not offenders, "model code must call jmipose.ops, never a backend:\n" + "\n".join(offenders)


@pytest.mark.parametrize("source, module, expected", [
    ("from jmipose.ops import _backends\n", "jmipose.models.jmi", True),
    ("from ..ops import _abi\n", "jmipose.models.jmi", True),
    ("from ..kernels.joint_region_gather import forward\n", "jmipose.models.jmi", True),
    ("import jmipose.kernels\n", "jmipose.engine.predict", True),
    ("import ctypes\n", "jmipose.data.video", True),
    ("from jmipose import ops\n", "jmipose.models.jmi", False),
    ("from jmipose.ops.joint_region_gather import joint_region_gather\n", "jmipose.nn.joint_region_gather", False),
    ("from .common import ConvBlock\n", "jmipose.models.jmi", False),
])
def test_the_scan_sees_every_import_form(source, module, expected):
    """The scan is not blind: each way of writing a backend import is caught, public imports are not."""
    names = [name for _, name in _imports(ast.parse(source), module)]
    assert any(_reaches_backend(name) for name in names) == expected, names
