"""GPU readiness without a GPU: every kernel compiled for real targets, its resources and occupancy.

    jmipose bench --compile-only                          # sm_80 and sm_90, Triton and CUDA
    jmipose bench --compile-only --arch 90 --json r.json --md r.md
    jmipose bench --compile-only --variants all           # every flag combination too (slow)

**Triton.**  Each op's kernels module lists, through one function (``launch_variants()``), every
kernel specialisation its GPU dispatch can launch: kernel x launch configuration (tiles, warps,
stages) x dtype x head dim x data-dependent flags (mask, bias, residuals, which gradients, index
width).  Each is compiled ahead of time with ``triton.compile(ASTSource(...), target=GPUTarget("cuda",
arch, 32))``, which needs no device, and its cubin is read with ``cuobjdump`` (the one shipped inside
the triton wheel).  Pointer arguments carry the 16-byte alignment every torch allocation has; integer
arguments are compiled without the divisibility or ``== 1`` specialisations a real launch may add, so
the figures are those of the generic kernel.  ``--variants covering`` (the default) compiles, for
every (kernel, configuration, dtype, head dim), the variant with every feature flag on, plus as many
others as it takes for every value of every flag to compile at least once per kernel and dtype; that
checks every launch configuration's resources and every code path in a few minutes.  ``--variants
all`` compiles the whole product.

**CUDA.**  The built library (``jmipose/_lib/libjmipose_cuda.so``) holds one cubin per architecture
it was built for; ``cuobjdump --dump-resource-usage`` gives each kernel's registers, stack, static
shared and local memory, ``cuobjdump -elf`` its ``__launch_bounds__`` (the block size it is launched
with: every kernel of ours declares it), and the dynamic shared memory of a launch comes from
``cuda_dynamic_shared`` (mirrored from the host code; a test checks the mirror against the launches
the CUDA source makes under tests/cuda_emulation).

**Spills.**  ptxas reports spills as bytes of local-memory stores and loads; they are counted here from
the SASS (``STL``/``LDL`` and their widths) of every kernel whose stack or local memory is not zero
(our kernels have no local arrays, so every local access is a spill).  A spill in a kernel the dispatch
picks at the model's shapes must be removed or justified in ``SPILL_NOTES``.

**Occupancy** (resident warps per SM) follows the rules of NVIDIA's occupancy calculator
(``cuda_occupancy.h`` of the CUDA toolkit): registers are allocated per warp in units of 256 and per
SM sub-partition (4 per SM); shared memory per block is rounded up to 128 bytes plus the 1 KB the
driver reserves per block, against the largest carveout of the SM; then the warp and block limits.
The limits are the published ones (``ARCHS``, with sources).  A record's status is ``ok``, the compile
error, or the hardware limit it exceeds; the command exits with status 1 when any record is not ok.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import io
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
KIND = "compile-only"
OPS = ("joint_region_gather", "joint_motion_attention")
BACKENDS = ("triton", "cuda")
VARIANT_MODES = ("covering", "all")
KERNEL_MODULES = {op: f"jmipose.kernels.{op}" for op in OPS}


@dataclass(frozen=True)
class ArchLimits:
    """Per-architecture limits that bound a launch and its occupancy (bytes, registers, threads)."""

    name: str
    gpus: str
    max_threads_per_block: int
    max_warps_per_sm: int
    max_blocks_per_sm: int
    registers_per_sm: int
    max_registers_per_block: int
    max_registers_per_thread: int
    register_unit: int             # registers are allocated per warp in multiples of this
    sub_partitions: int            # the register file is split evenly between them
    shared_per_sm: int             # largest shared-memory carveout of the SM
    max_shared_per_block: int      # static + dynamic, with the opt-in above 48 KB
    max_static_shared: int         # a kernel's __shared__ variables alone
    reserved_shared_per_block: int  # the driver's own, on top of the kernel's
    shared_unit: int               # shared memory per block is allocated in multiples of this


KB = 1024
ARCHS: dict[int, ArchLimits] = {
    80: ArchLimits("sm_80", "A100", 1024, 64, 32, 65536, 65536, 255, 256, 4, 164 * KB, 163 * KB, 48 * KB, KB, 128),
    90: ArchLimits("sm_90", "H100, H200", 1024, 64, 32, 65536, 65536, 255, 256, 4, 228 * KB, 227 * KB, 48 * KB, KB,
                   128),
}
LIMIT_SOURCES = [
    "NVIDIA CUDA C++ Programming Guide, 'Compute Capabilities', table 'Technical Specifications per Compute "
    "Capability' (https://docs.nvidia.com/cuda/cuda-c-programming-guide/#compute-capabilities): 1,024 threads "
    "per block, 64 resident warps and 32 resident blocks per SM, 64K 32-bit registers per SM and per block, 255 "
    "registers per thread, 48 KB of static shared memory, 164 KB shared memory per SM and 163 KB per block on "
    "8.0, 228 KB and 227 KB on 9.0, 1 KB of shared memory reserved by the system per block.",
    "NVIDIA Ampere Tuning Guide (https://docs.nvidia.com/cuda/ampere-tuning-guide/): the A100's shared "
    "memory carveout of up to 164 KB per SM, 163 KB per block with the opt-in.",
    "NVIDIA Hopper Tuning Guide (https://docs.nvidia.com/cuda/hopper-tuning-guide/): up to 228 KB of shared "
    "memory per SM on H100, 227 KB per block with the opt-in.",
    "cuda_occupancy.h (CUDA toolkit): registers allocated per warp in units of 256 across 4 SM "
    "sub-partitions, shared memory in units of 128 bytes, for compute capability 8.x and 9.x.",
]

# Spills accepted in kernels the dispatch picks at the model's shapes, with why.  Each entry:
# (backend, op, kernel name, dtype or None for any, arch or None for any, justification).
SPILL_NOTES: list[tuple[str, str, str, str | None, int | None, str]] = []

# ---------------------------------------------------------------------------------------------------
# Occupancy and limits


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


@dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    limiter: str  # what bounds it: warps, blocks, registers or shared memory


def occupancy(limits: ArchLimits, registers: int, shared_bytes: int, threads: int) -> Occupancy:
    """Resident blocks and warps per SM of a kernel using ``registers`` per thread and
    ``shared_bytes`` (static + dynamic) per block of ``threads`` threads, with the largest carveout."""
    warps = -(-threads // 32)
    bounds = {"warps": limits.max_warps_per_sm // warps, "blocks": limits.max_blocks_per_sm}
    if registers > 0:
        per_warp = _round_up(registers * 32, limits.register_unit)
        warps_per_partition = (limits.registers_per_sm // limits.sub_partitions) // per_warp
        bounds["registers"] = warps_per_partition * limits.sub_partitions // warps
    per_block = _round_up(shared_bytes + limits.reserved_shared_per_block, limits.shared_unit)
    bounds["shared memory"] = limits.shared_per_sm // per_block
    blocks = min(bounds.values())
    return Occupancy(blocks, blocks * warps, "+".join(name for name, bound in bounds.items() if bound == blocks))


def limit_violations(limits: ArchLimits, registers: int, shared_static: int, shared_dynamic: int,
                     threads: int) -> list[str]:
    """The hardware limits a launch with these resources exceeds (empty when it fits)."""
    problems = []
    if threads > limits.max_threads_per_block:
        problems.append(f"{threads} threads per block > {limits.max_threads_per_block}")
    if registers > limits.max_registers_per_thread:
        problems.append(f"{registers} registers per thread > {limits.max_registers_per_thread}")
    warps = -(-threads // 32)
    allocated = _round_up(registers * 32, limits.register_unit) * _round_up(warps, limits.sub_partitions)
    if allocated > limits.max_registers_per_block:
        problems.append(f"{allocated} registers per block (as allocated) > {limits.max_registers_per_block}")
    if shared_static > limits.max_static_shared:
        problems.append(f"{shared_static} bytes of static shared memory > {limits.max_static_shared}")
    if shared_static + shared_dynamic > limits.max_shared_per_block:
        problems.append(f"{shared_static + shared_dynamic} bytes of shared memory per block > "
                        f"{limits.max_shared_per_block} ({limits.name})")
    return problems


# ---------------------------------------------------------------------------------------------------
# cuobjdump


def find_cuobjdump() -> str | None:
    """The toolkit's cuobjdump (CUDA_HOME, PATH), else the one inside the triton wheel."""
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(str(Path(os.environ[var]) / "bin" / "cuobjdump"))
    candidates += [shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"]
    try:
        from triton import knobs

        candidates.append(knobs.nvidia.cuobjdump.path)
    except Exception:  # noqa: BLE001 - no triton, or a triton without knobs: no bundled tool
        pass
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _run_tool(args: list[str]) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} {' '.join(args[1:-1])} failed ({result.returncode}): "
                           f"{result.stderr.strip()[-500:]}")
    return result.stdout


_RESOURCE_FIELDS = ("REG", "STACK", "SHARED", "LOCAL")


def parse_resource_usage(text: str) -> dict[tuple[str, str], dict[str, int]]:
    """``cuobjdump --dump-resource-usage`` output -> {(arch, function): {REG, STACK, SHARED, LOCAL}};
    arch is e.g. ``sm_90`` (PTX sections are skipped)."""
    usage: dict[tuple[str, str], dict[str, int]] = {}
    arch, in_elf, function = None, True, None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Fatbin "):
            in_elf = stripped.startswith("Fatbin elf code")
            arch = None
        elif stripped.startswith("arch = "):
            arch = stripped.split("=", 1)[1].strip()
        elif stripped.startswith("Function ") and stripped.endswith(":"):
            function = stripped[len("Function "):-1]
        elif stripped.startswith("REG:") and function is not None:
            fields = dict(item.split(":", 1) for item in stripped.split() if ":" in item)
            if in_elf:
                usage[(arch or "unknown", function)] = {key: int(fields.get(key, 0)) for key in _RESOURCE_FIELDS}
            function = None
    return usage


_LOCAL_ACCESS = re.compile(r"\b(STL|LDL)((?:\.[A-Z0-9]+)*)\b")
_WIDTHS = {"U8": 1, "S8": 1, "U16": 2, "S16": 2, "64": 8, "128": 16}


def parse_local_accesses(sass: str) -> dict[tuple[str, str], tuple[int, int]]:
    """``cuobjdump -sass`` output -> {(arch, function): (bytes stored, bytes loaded)} of the local-memory
    instructions (``STL``/``LDL``), each counted once with its width, as ptxas counts spill bytes."""
    counts: dict[tuple[str, str], list[int]] = {}
    arch, function = "unknown", None
    for line in sass.splitlines():
        stripped = line.strip()
        if stripped.startswith("arch = "):
            arch = stripped.split("=", 1)[1].strip()
        elif stripped.startswith("Function :"):
            function = stripped.split(":", 1)[1].strip()
            counts.setdefault((arch, function), [0, 0])
        elif function is not None and "/*" in stripped:
            instruction = stripped.split("*/", 1)[-1].split(";", 1)[0]
            match = _LOCAL_ACCESS.search(instruction)
            if match:
                suffixes = [part for part in match.group(2).split(".") if part]
                width = next((_WIDTHS[s] for s in suffixes if s in _WIDTHS), 4)
                counts[(arch, function)][0 if match.group(1) == "STL" else 1] += width
    return {key: (value[0], value[1]) for key, value in counts.items()}


def parse_max_threads(elf_dump: str) -> dict[tuple[str, str], int]:
    """``cuobjdump -elf`` output -> {(arch, function): EIATTR_MAX_THREADS}, the block size a kernel's
    ``__launch_bounds__`` declares."""
    threads: dict[tuple[str, str], int] = {}
    arch, function, pending = "unknown", None, False
    for line in elf_dump.splitlines():
        if line.startswith("arch = "):
            arch = line.split("=", 1)[1].strip()
        elif line.startswith(".nv.info."):
            function = line[len(".nv.info."):].strip()
        elif "EIATTR_MAX_THREADS" in line:
            pending = True
        elif pending and line.strip().startswith("Value:"):
            values = line.split(":", 1)[1].split()
            if function and values:
                product = 1
                for value in values:  # x, y, z
                    product *= int(value, 16)
                threads[(arch, function)] = product
            pending = False
    return threads


def demangle(names: list[str]) -> dict[str, str]:
    """C++ names through c++filt when it is installed (else unchanged)."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {name: name for name in names}
    result = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=False)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != len(names):
        return {name: name for name in names}
    return dict(zip(names, lines))


def _arch_number(arch: str) -> int | None:
    match = re.fullmatch(r"sm_(\d+)[af]?", arch)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------------
# Records


def make_record(op: str, backend: str, kernel: str, config: str, flags: str, dtype: str, arch: int, model: bool,
                registers: int | None = None, stack: int = 0, local: int = 0, spills: tuple[int, int] = (0, 0),
                shared_static: int = 0, shared_dynamic: int = 0, threads: int | None = None,
                error: str | None = None) -> dict[str, Any]:
    """One (op, backend, kernel, configuration, arch) record with its occupancy and status."""
    limits = ARCHS[arch]
    record: dict[str, Any] = {
        "op": op, "backend": backend, "kernel": kernel, "config": config, "flags": flags, "dtype": dtype,
        "arch": limits.name, "model": model, "registers": registers, "spill_stores": spills[0],
        "spill_loads": spills[1], "stack_bytes": stack, "local_bytes": local, "shared_static": shared_static,
        "shared_dynamic": shared_dynamic, "shared_bytes": shared_static + shared_dynamic, "threads": threads,
        "blocks_per_sm": None, "occupancy": None, "occupancy_limit": None, "status": "ok", "note": None,
    }
    if error is not None:
        record.update(status=error, spill_stores=None, spill_loads=None, shared_bytes=None)
        return record
    problems = limit_violations(limits, registers, shared_static, shared_dynamic, threads)
    if problems:
        record["status"] = "over the limit: " + "; ".join(problems)
    else:
        fit = occupancy(limits, registers, shared_static + shared_dynamic, threads)
        record.update(blocks_per_sm=fit.blocks_per_sm, occupancy=fit.warps_per_sm, occupancy_limit=fit.limiter)
    if spills[0] or spills[1]:
        note = _spill_note(record)
        record["note"] = note
        if model and note is None and record["status"] == "ok":
            record["status"] = (f"spills at the model's shapes ({spills[0]} bytes stored, {spills[1]} loaded): "
                                "remove them or justify them in SPILL_NOTES")
    return record


def _spill_note(record: dict[str, Any]) -> str | None:
    for backend, op, kernel, dtype, arch, text in SPILL_NOTES:
        if (backend == record["backend"] and op == record["op"] and kernel == record["kernel"]
                and dtype in (None, record["dtype"]) and (arch is None or ARCHS[arch].name == record["arch"])):
            return text
    return None


# ---------------------------------------------------------------------------------------------------
# Triton


def _flags_text(flags: dict[str, Any]) -> str:
    parts = []
    for name, value in flags.items():
        if isinstance(value, bool):
            parts.append(f"{name}={int(value)}")
        else:
            parts.append(f"{name}={getattr(value, 'name', value)}")
    return " ".join(parts)


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


@functools.cache
def _variants(op: str) -> list[dict]:
    import importlib

    return importlib.import_module(KERNEL_MODULES[op]).launch_variants()


def select_variants(variants: list[dict], mode: str = "covering") -> list[int]:
    """Indices of the variants to compile.  ``all``: every one.  ``covering``: per (kernel, config,
    dtype) the variant with the most flags on (ties: the first listed), then per (kernel, dtype), by
    greedy set cover, variants until every value of every flag has been compiled once."""
    if mode == "all":
        return list(range(len(variants)))
    if mode != "covering":
        raise ValueError(f"variants mode must be one of {VARIANT_MODES}, got {mode!r}")

    def on(variant: dict) -> int:
        return sum(1 for value in variant["flags"].values() if value is True)

    chosen: list[int] = []
    groups: dict[tuple, list[int]] = {}
    for index, variant in enumerate(variants):
        groups.setdefault((variant["name"], str(variant["dtype"]), variant["config"]), []).append(index)
    for members in groups.values():
        chosen.append(max(members, key=lambda i: (on(variants[i]), -i)))
    families: dict[tuple, list[int]] = {}
    for index, variant in enumerate(variants):
        families.setdefault((variant["name"], str(variant["dtype"])), []).append(index)

    def pairs(index: int) -> set[tuple[str, str]]:
        return {(name, repr(value)) for name, value in variants[index]["flags"].items()}

    for members in families.values():
        covered = set().union(*(pairs(i) for i in chosen if i in members))
        wanted = set().union(*(pairs(i) for i in members))
        while wanted - covered:
            best = max(members, key=lambda i: (len(pairs(i) - covered), -i))
            chosen.append(best)
            covered |= pairs(best)
    return sorted(set(chosen))


def _compile_triton(op: str, index: int, arch: int, cuobjdump: str) -> dict[str, Any]:
    """Worker: compiles variant ``index`` of ``op`` for ``arch`` and reads its resources (a record)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    variant = _variants(op)[index]
    config = f"{variant['config']} warps={variant['num_warps']}"
    if variant["num_stages"] is not None:
        config += f" stages={variant['num_stages']}"
    identity = dict(op=op, backend="triton", kernel=variant["name"], config=config,
                    flags=_flags_text(variant["flags"]), dtype=_dtype_name(variant["dtype"]), arch=arch,
                    model=variant["model"])
    kernel = variant["kernel"]
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names)
             if variant["signature"].get(name, "").startswith("*")}
    signature = {name: "constexpr" if name in variant["constexprs"] else variant["signature"][name]
                 for name in kernel.arg_names}
    options = {"num_warps": variant["num_warps"]}
    if variant["num_stages"] is not None:
        options["num_stages"] = variant["num_stages"]
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=variant["constexprs"],
                                                attrs=attrs),
                                      target=GPUTarget("cuda", arch, 32), options=options)
    except Exception as exc:  # noqa: BLE001 - any compiler failure is this record's status
        return make_record(**identity, error=f"compile error: {_first_lines(exc)}")
    with tempfile.TemporaryDirectory(prefix="jmipose-cubin-") as folder:
        cubin = Path(folder) / f"{kernel.__name__}.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = parse_resource_usage(_run_tool([cuobjdump, "--dump-resource-usage", str(cubin)]))
        resources = next((value for (_, name), value in usage.items() if name == compiled.metadata.name), None)
        if resources is None:
            return make_record(**identity, error=f"no resource usage for {compiled.metadata.name} in the cubin")
        spills = (0, 0)
        if resources["STACK"] or resources["LOCAL"]:
            local = parse_local_accesses(_run_tool([cuobjdump, "-sass", str(cubin)]))
            spills = next((value for (_, name), value in local.items() if name == compiled.metadata.name), (0, 0))
    return make_record(**identity, registers=resources["REG"], stack=resources["STACK"], local=resources["LOCAL"],
                       spills=spills, shared_static=resources["SHARED"], shared_dynamic=compiled.metadata.shared,
                       threads=32 * compiled.metadata.num_warps)


def _first_lines(exc: BaseException, limit: int = 400) -> str:
    """The root cause of a compiler error (triton chains one CompilationError per inlined function,
    each carrying the source) and where it happened: 'AssertionError: Input shapes should have ...
    (in _forward_key_step at 16:33)'."""
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 50:
        chain.append(chain[-1].__cause__)
    root = chain[-1]
    lines = [line.strip() for line in str(root).strip().splitlines() if line.strip()]
    message = lines[-1] if lines else ""
    where = ""
    located = [e for e in chain if re.match(r"at \d+:\d+:", str(e).strip())]
    if located:
        text = str(located[-1]).strip()
        function = re.search(r"def (\w+)\(", str(getattr(located[-1], "src", "") or ""))
        where = f" (in {function.group(1) + ' ' if function else ''}{text.split(':', 2)[0]}:{text.split(':', 2)[1]})"
    text = f"{type(root).__name__}: {message}{where}" if message else f"{type(root).__name__}{where}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _worker_init() -> None:
    os.environ.pop("TRITON_INTERPRET", None)


def triton_records(archs: list[int], mode: str = "covering", jobs: int = 1, ops: tuple[str, ...] = OPS,
                   progress=None, keep=None) -> list[dict[str, Any]]:
    """Compiles the chosen variants of both ops for every arch in ``jobs`` worker processes (spawned:
    a process that imported triton with TRITON_INTERPRET=1 cannot compile).  ``keep(op, variant)``,
    when given, narrows the selection further."""
    cuobjdump = find_cuobjdump()
    tasks = [(op, index, arch) for op in ops for index in select_variants(_variants(op), mode)
             if keep is None or keep(op, _variants(op)[index]) for arch in archs]
    if cuobjdump is None:
        return [_identity_error(op, index, arch, "cuobjdump not found (it ships with triton and the CUDA toolkit)")
                for op, index, arch in tasks]
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context,
                                                    initializer=_worker_init) as pool:
            futures = [pool.submit(_compile_triton, op, index, arch, cuobjdump) for op, index, arch in tasks]
            records = []
            for done, future in enumerate(futures, 1):
                records.append(future.result())
                if progress is not None and (done % 25 == 0 or done == len(futures)):
                    progress(f"triton: {done}/{len(futures)} compiled")
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved
    return records


def _identity_error(op: str, index: int, arch: int, error: str) -> dict[str, Any]:
    variant = _variants(op)[index]
    return make_record(op, "triton", variant["name"], variant["config"], _flags_text(variant["flags"]),
                       _dtype_name(variant["dtype"]), arch, variant["model"], error=error)


# ---------------------------------------------------------------------------------------------------
# CUDA

_CUDA_TYPES = {"float": "float32", "__half": "float16", "__nv_bfloat16": "bfloat16", "double": "float64"}


def cuda_dynamic_shared(op: str, kernel: str, dtype: str, template: int | None) -> int:
    """Dynamic shared memory (bytes) a CUDA kernel is launched with, mirrored from the host code of
    csrc/<op>/cuda.cu (the binary does not carry it): op A's kernels use static shared memory only;
    op B's forward, dK/dV and dQ kernels size it from their tile (csrc/joint_motion_attention/
    cuda_tiles.cuh: Tile<T, D>), the delta kernel uses none.  tests/bench/test_compile_only.py checks
    this against the launches the CUDA source makes under tests/cuda_emulation."""
    if op != "joint_motion_attention" or kernel == "delta_kernel" or template is None:
        return 0
    element = {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    warps = 2 if dtype == "float32" and template == 128 else 4
    rows, cols = 16 * warps, 32 if template == 128 else 64
    stride = template + 16 // element

    def tile(n_rows: int) -> int:
        return n_rows * stride * element

    if kernel == "forward_kernel":
        return tile(rows) + 2 * tile(cols) + cols  # + one bool per streamed key
    if kernel == "dkdv_kernel":
        return 2 * tile(rows) + 2 * tile(cols) + 2 * cols * 4
    if kernel == "dq_kernel":
        return 2 * tile(rows) + 2 * tile(cols) + rows * 4 + cols
    raise ValueError(f"unknown joint_motion_attention CUDA kernel {kernel!r}")


def cuda_model_kernel(op: str, kernel: str, dtype: str, template: int | None) -> bool:
    """Whether the CUDA dispatch launches this instantiation at the model's shapes (op A: 48 output
    channels per group take the 64-channel tile, any dtype; op B: d = 48 runs padded to 64, bfloat16)."""
    if op == "joint_region_gather":
        return kernel != "forward_kernel" or template == 64
    if op == "joint_motion_attention":
        return dtype == "bfloat16" and (kernel == "delta_kernel" or template == 64)
    return False


def _cuda_identity(demangled: str) -> tuple[str, str, str, int | None]:
    """(op, kernel, dtype, integer template argument) of a demangled kernel name such as
    ``void jmipose::attention_cuda::dq_kernel<float, 64>(jmipose::attention_cuda::BackwardParams<float>)``."""
    head = demangled.replace("(anonymous namespace)", "anonymous").split("(", 1)[0].strip()
    match = re.fullmatch(r"(?:\S+\s+)?(?:[\w:]*::)?(\w+)(?:<(.*)>)?", head)
    kernel, args = (match.group(1), match.group(2) or "") if match else (head, "")
    args_list = [arg.strip() for arg in args.split(",") if arg.strip()]
    dtype = next((_CUDA_TYPES[a] for a in args_list if a in _CUDA_TYPES), "")
    template = next((int(a) for a in args_list if re.fullmatch(r"\d+", a)), None)
    lowered = demangled.lower()
    if "attention" in lowered:
        op = "joint_motion_attention"
    elif "jrg" in lowered or "region_gather" in lowered:
        op = "joint_region_gather"
    else:
        op = "other"
    return op, kernel, dtype, template


def cuda_records(archs: list[int], lib_path: Path | None = None) -> list[dict[str, Any]]:
    """One record per (kernel instantiation, arch) of the built CUDA library."""
    if lib_path is None:
        from jmipose.ops._backends import CUDA_LIB_PATH

        lib_path = CUDA_LIB_PATH
    arch_names = {ARCHS[a].name: a for a in archs}
    if not Path(lib_path).is_file():
        return [make_record("all", "cuda", "library", "", "", "", arch, False,
                            error=f"not built: no {lib_path} (install with nvcc present, JMIPOSE_CUDA=1)")
                for arch in archs]
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        return [make_record("all", "cuda", "library", "", "", "", arch, False,
                            error="cuobjdump not found (it ships with triton and the CUDA toolkit)") for arch in archs]
    usage = parse_resource_usage(_run_tool([cuobjdump, "--dump-resource-usage", str(lib_path)]))
    usage = {key: value for key, value in usage.items() if key[0] in arch_names}
    max_threads = parse_max_threads(_run_tool([cuobjdump, "-elf", str(lib_path)]))
    spilling = sorted({name for (_, name), value in usage.items() if value["STACK"] or value["LOCAL"]})
    local = parse_local_accesses(_run_tool([cuobjdump, "-sass", "-fun", ",".join(spilling), str(lib_path)])) \
        if spilling else {}
    names = demangle(sorted({name for _, name in usage}))
    records = []
    built = {arch for arch, _ in usage}
    for arch_name in arch_names:
        if arch_name not in built:
            records.append(make_record("all", "cuda", "library", "", "", "", arch_names[arch_name], False,
                                       error=f"the library has no {arch_name} code (JMIPOSE_CUDA_ARCH)"))
    for (arch_name, mangled), value in sorted(usage.items(), key=lambda item: (names[item[0][1]], item[0][0])):
        op, kernel, dtype, template = _cuda_identity(names[mangled])
        config = "<" + ", ".join(part for part in (dtype, None if template is None else str(template)) if part) + ">"
        arch = arch_names[arch_name]
        threads = max_threads.get((arch_name, mangled))
        if threads is None:
            records.append(make_record(op, "cuda", kernel, config, "", dtype, arch, False,
                                       error="no __launch_bounds__: the block size is unknown to this check"))
            continue
        records.append(make_record(
            op, "cuda", kernel, config, "", dtype, arch, cuda_model_kernel(op, kernel, dtype, template),
            registers=value["REG"], stack=value["STACK"], local=value["LOCAL"],
            spills=local.get((arch_name, mangled), (0, 0)), shared_static=value["SHARED"],
            shared_dynamic=cuda_dynamic_shared(op, kernel, dtype, template), threads=threads))
    return records


# ---------------------------------------------------------------------------------------------------
# Report


def worst(records: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """The worst ok record by registers (then lowest occupancy), by shared memory, by spill bytes."""
    ok = [r for r in records if r["registers"] is not None]
    spilled = [r for r in ok if (r["spill_stores"] or 0) + (r["spill_loads"] or 0) > 0]
    return {
        "registers": max(ok, key=lambda r: (r["registers"], -(r["occupancy"] or 0)), default=None),
        "shared memory": max(ok, key=lambda r: r["shared_bytes"] or 0, default=None),
        "spills": max(spilled, key=lambda r: r["spill_stores"] + r["spill_loads"], default=None),
    }


def _label(record: dict[str, Any]) -> str:
    flags = f" [{record['flags']}]" if record["flags"] else ""
    return (f"{record['op']} {record['backend']} `{record['kernel']}` {record['dtype']} {record['config']}{flags} "
            f"on {record['arch']}")


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def render(records: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The Markdown report: summary, limits and sources, worst kernels, spills, every record."""
    failing = [r for r in records if r["status"] != "ok"]
    lines = ["# jmipose GPU kernels compiled ahead of time", "",
             f"{len(records)} records (op x backend x kernel x configuration x arch), {len(records) - len(failing)} "
             f"ok, {len(failing)} not ok.  " + ", ".join(f"{k} = {v}" for k, v in settings.items()), ""]
    if failing:
        lines += ["## Not ok", ""] + [f"- {_label(r)}: {r['status']}" for r in failing] + [""]
    lines += ["## Worst kernels", ""]
    for what, record in worst(records).items():
        if record is None:
            lines.append(f"- by {what}: none")
            continue
        lines.append(f"- by {what}: {_label(record)}: {record['registers']} registers, {record['shared_bytes']} "
                     f"bytes shared, {record['spill_stores']}/{record['spill_loads']} bytes spilled (stores/loads), "
                     f"{record['occupancy']} warps per SM ({record['occupancy_limit']}-bound)")
    spilled = [r for r in records if (r["spill_stores"] or 0) + (r["spill_loads"] or 0) > 0]
    lines += ["", "## Spills", ""]
    if spilled:
        lines += ["| op | backend | kernel | dtype | config | flags | arch | model shapes | stores B | loads B | "
                  "note |", "|---|---|---|---|---|---|---|:---:|---:|---:|---|"]
        for r in spilled:
            lines.append(f"| {r['op']} | {r['backend']} | {r['kernel']} | {r['dtype']} | {r['config']} | {r['flags']} "
                         f"| {r['arch']} | {'yes' if r['model'] else 'no'} | {r['spill_stores']} | {r['spill_loads']} "
                         f"| {r['note'] or ('not at the model shapes' if not r['model'] else '')} |")
    else:
        lines.append("None.")
    lines += ["", "## Limits", "", "| arch | GPUs | threads/block | warps/SM | blocks/SM | registers/SM | "
              "registers/thread | shared/SM | shared/block |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for limits in ARCHS.values():
        lines.append(f"| {limits.name} | {limits.gpus} | {limits.max_threads_per_block} | {limits.max_warps_per_sm} | "
                     f"{limits.max_blocks_per_sm} | {limits.registers_per_sm} | {limits.max_registers_per_thread} | "
                     f"{limits.shared_per_sm // KB} KB | {limits.max_shared_per_block // KB} KB |")
    lines += ["", "Sources:", ""] + [f"- {source}" for source in LIMIT_SOURCES]
    lines += ["", "## Every record", "", "Shared = static + dynamic bytes per block; occupancy = resident warps "
              "per SM (of 64) and what bounds it; model = picked by the dispatch at the model's shapes.", "",
              "| op | backend | kernel | dtype | config | flags | arch | model | regs | spill st/ld B | shared B | "
              "threads | warps/SM | bound | status |",
              "|---|---|---|---|---|---|---|:---:|---:|---:|---:|---:|---:|---|---|"]
    for r in records:
        spills = "–" if r["spill_stores"] is None else f"{r['spill_stores']}/{r['spill_loads']}"
        lines.append(f"| {r['op']} | {r['backend']} | {r['kernel']} | {r['dtype']} | {r['config']} | {r['flags']} | "
                     f"{r['arch']} | {'yes' if r['model'] else ''} | {_cell(r['registers'])} | {spills} | "
                     f"{_cell(r['shared_bytes'])} | {_cell(r['threads'])} | {_cell(r['occupancy'])} | "
                     f"{_cell(r['occupancy_limit'])} | {r['status']} |")
    return "\n".join(lines) + "\n"


RECORD_KEYS = ("op", "backend", "kernel", "config", "flags", "dtype", "arch", "model", "registers", "spill_stores",
               "spill_loads", "stack_bytes", "local_bytes", "shared_static", "shared_dynamic", "shared_bytes",
               "threads", "blocks_per_sm", "occupancy", "occupancy_limit", "status", "note")


def document(records: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "kind": KIND, "settings": settings,
            "limits": {limits.name: asdict(limits) for limits in ARCHS.values()}, "limit_sources": LIMIT_SOURCES,
            "records": records}


def validate(doc: dict[str, Any]) -> list[str]:
    """Problems with a compile-only results document (empty when it follows the layout)."""
    problems = []
    if doc.get("kind") != KIND or doc.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"not a {KIND} document of schema {SCHEMA_VERSION}")
    for index, record in enumerate(doc.get("records") or []):
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            problems.append(f"record {index}: missing {', '.join(missing)}")
        elif record["status"] == "ok" and (record["registers"] is None or record["occupancy"] is None):
            problems.append(f"record {index}: ok without registers or occupancy")
    if not doc.get("records"):
        problems.append("no records")
    return problems


# ---------------------------------------------------------------------------------------------------
# Command


def parse_archs(text: str) -> list[int]:
    """'80,90' or 'sm_80,sm_90' -> [80, 90]."""
    archs = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        number = item.lower().removeprefix("sm_").replace(".", "")
        if not number.isdigit() or int(number) not in ARCHS:
            raise ValueError(f"--arch: unknown architecture {item!r}; expected a comma-separated subset of "
                             f"{', '.join(str(a) for a in ARCHS)}")
        archs.append(int(number))
    if not archs:
        raise ValueError("--arch: no architecture given")
    return list(dict.fromkeys(archs))


def parse_backends(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown or not chosen:
        raise ValueError(f"--backends: expected a comma-separated subset of {', '.join(BACKENDS)}, got {text!r}")
    return chosen


def run(archs: list[int], backends: tuple[str, ...] = BACKENDS, mode: str = "covering", jobs: int = 1,
        progress=None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(records, settings) of the chosen backends and archs."""
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    versions: dict[str, Any] = {}
    if "triton" in backends:
        try:
            import triton
        except ImportError as exc:
            records += [make_record("all", "triton", "kernels", "", "", "", arch, False,
                                    error=f"triton is not importable ({exc})") for arch in archs]
        else:
            versions["triton"] = triton.__version__
            records += triton_records(archs, mode, jobs, progress=progress)
    if "cuda" in backends:
        from jmipose.ops._backends import build_info

        versions["nvcc"] = build_info().get("nvcc")
        records += cuda_records(archs)
    cuobjdump = find_cuobjdump()
    if cuobjdump:
        versions["cuobjdump"] = next((line.strip() for line in _run_tool([cuobjdump, "--version"]).splitlines()
                                      if "release" in line), None)
    settings = {"archs": ",".join(ARCHS[a].name for a in archs), "backends": ",".join(backends), "variants": mode,
                **versions, "wall_s": round(time.perf_counter() - started, 1)}
    return records, settings


def main(args: argparse.Namespace) -> int:
    """``jmipose bench --compile-only``: exit status 0 when every record is ok, 1 otherwise, 2 on bad
    arguments."""
    from jmipose.info import available_cores

    try:
        archs = parse_archs(args.arch)
        backends = parse_backends(args.backends)
    except ValueError as exc:
        print(f"jmipose bench: {exc}", file=sys.stderr)
        return 2
    jobs = args.jobs or available_cores()

    def progress(line: str) -> None:
        print(f"jmipose bench --compile-only: {line}", file=sys.stderr, flush=True)

    records, settings = run(archs, backends, args.variants, jobs, progress)
    report = render(records, settings)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document(records, settings), indent=1) + "\n")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(report)
    failing = [r for r in records if r["status"] != "ok"]
    summary = report.split("\n## Spills")[0]  # summary, failures and worst kernels; the tables go to --md
    print(summary)
    progress(f"{len(records)} records, {len(failing)} not ok, {settings.get('wall_s', '?')} s")
    return 1 if failing else 0
