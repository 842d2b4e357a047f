"""``jmipose bench --compile-only``: occupancy and limits against hand-computed cases, the cuobjdump
parsers on NVIDIA's output format, the variant selection, a real ahead-of-time compile for sm_90,
spill counts against ptxas's own report, the CUDA launch facts against the launches the CUDA source
makes under tests/cuda_emulation, and the command's exit status.

The full report (every kernel, both archs) is CI's compile-only step (.ci/run), not a test here."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jmipose import cli
from jmipose.bench import compile_only as co

ROOT = Path(__file__).resolve().parents[2]
A100, H100 = co.ARCHS[80], co.ARCHS[90]


def _has_cuda_compiler() -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        from triton.backends import backends

        return "nvidia" in backends and co.find_cuobjdump() is not None
    except Exception:  # noqa: BLE001 - a triton without the NVIDIA backend
        return False


needs_triton_cuda = pytest.mark.skipif(not _has_cuda_compiler(),
                                       reason="triton's NVIDIA backend (and its cuobjdump) is not installed")


# --- occupancy and limits ----------------------------------------------------------------------------

@pytest.mark.parametrize("limits,registers,shared,threads,blocks,warps,limiter", [
    # 128 regs x 32 lanes = 4096 per warp; 16384 per sub-partition -> 4 warps each, 16 per SM: 2 blocks of 8
    (A100, 128, 0, 256, 2, 16, "registers"),
    # 168 regs -> 5376 per warp (a multiple of 256); 16384 // 5376 = 3 warps per sub-partition -> 12: 3 blocks
    (A100, 168, 0, 128, 3, 12, "registers"),
    # 255 regs -> 8160 -> 8192 per warp: 2 warps per sub-partition, 8 per SM: one block of 8 warps
    (H100, 255, 0, 256, 1, 8, "registers"),
    # 32 regs: the 64-warp limit binds (8 blocks of 8 warps)
    (H100, 32, 0, 256, 8, 64, "warps"),
    # 100 KB dynamic + 1 KB reserved = 103424 bytes per block: one fits in 164 KB, two in 228 KB
    (A100, 32, 100 * 1024, 128, 1, 4, "shared memory"),
    (H100, 32, 100 * 1024, 128, 2, 8, "shared memory"),
    # 32 threads, few registers: the 32-block limit binds (32 warps)
    (A100, 16, 0, 32, 32, 32, "blocks"),
])
def test_occupancy_follows_the_allocation_rules(limits, registers, shared, threads, blocks, warps, limiter):
    fit = co.occupancy(limits, registers, shared, threads)
    assert (fit.blocks_per_sm, fit.warps_per_sm) == (blocks, warps)
    assert limiter in fit.limiter.split("+")


def test_ties_name_every_binding_limit():
    # 127 regs (-> 4096 per warp, 2 blocks of 8 warps) and 98 KB shared (2 blocks in 228 KB): both bind
    assert co.occupancy(H100, 127, 98 * 1024, 256).limiter == "registers+shared memory"


def test_limit_violations_name_each_limit():
    assert co.limit_violations(A100, 255, 0, 0, 256) == []
    problems = co.limit_violations(A100, 72, 50 * 1024, 120 * 1024, 1056)
    assert any("1056 threads per block > 1024" in p for p in problems)
    # 72 regs x 32 = 2304 per warp x 36 warps (33 rounded up to 4 sub-partitions) = 82944 > 65536
    assert any("82944 registers per block" in p for p in problems)
    assert any("static shared memory" in p for p in problems)
    assert any("bytes of shared memory per block > 166912 (sm_80)" in p for p in problems)
    # the same shared memory fits an H100 block (227 KB)
    assert co.limit_violations(H100, 64, 0, 200 * 1024, 128) == []


def test_records_report_limits_compile_errors_and_spills():
    over = co.make_record("op", "triton", "k", "c", "", "float32", 80, False, registers=64, shared_dynamic=200 * 1024,
                          threads=128)
    assert over["status"].startswith("over the limit: ") and over["occupancy"] is None
    failed = co.make_record("op", "triton", "k", "c", "", "float32", 90, False, error="compile error: boom")
    assert failed["status"] == "compile error: boom" and failed["registers"] is None
    spill = dict(registers=128, spills=(12, 8), threads=256)
    assert co.make_record("op", "cuda", "k", "c", "", "float32", 80, False, **spill)["status"] == "ok"
    at_model = co.make_record("op", "cuda", "k", "c", "", "float32", 80, True, **spill)
    assert at_model["status"].startswith("spills at the model's shapes (12 bytes stored, 8 loaded)")


def test_compile_errors_name_the_root_cause_and_where():
    class Located(Exception):  # like triton's CompilationError: "at L:C:" + source, the function in .src
        def __init__(self, text, src):
            super().__init__(text)
            self.src = src

    root = AssertionError("Input shapes should have M >= 1, N >= 1 and K >= 16")
    inner = Located("at 16:33:\n    scores = tl.dot(q, tl.trans(k))\n    ^", "def _forward_key_step(q, k):\n  ...")
    inner.__cause__ = root
    outer = Located("at 13:12:\n    _forward_query_block(q)\n    ^", "def kernel(q):\n  ...")
    outer.__cause__ = inner
    assert co._first_lines(outer) == ("AssertionError: Input shapes should have M >= 1, N >= 1 and K >= 16 "
                                      "(in _forward_key_step at 16:33)")
    assert co._first_lines(ValueError("line one\nline two")) == "ValueError: line two"


# --- cuobjdump output -------------------------------------------------------------------------------

RESOURCE_USAGE = """
Fatbin elf code:
================
arch = sm_80
code version = [1,8]

Resource usage:
 Common:
  GLOBAL:0
 Function _Z6kernelPf:
  REG:168 STACK:8 SHARED:1024 LOCAL:0 CONSTANT[0]:616 TEXTURE:0 SURFACE:0 SAMPLER:0

Fatbin ptx code:
================
arch = sm_90
 Function _Z6kernelPf:
  REG:1 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:0 TEXTURE:0 SURFACE:0 SAMPLER:0

Fatbin elf code:
================
arch = sm_90

Resource usage:
 Function _Z6kernelPf:
  REG:40 STACK:0 SHARED:0 LOCAL:16 CONSTANT[0]:616 TEXTURE:0 SURFACE:0 SAMPLER:0
"""

SASS = """
\tcode for sm_90
\t\tFunction : _Z6kernelPf
        /*0010*/                   STL [R1], R5 ;                     /* 0x0000000501007387 */
        /*0020*/                   STL.64 [R1+0x8], R6 ;              /* 0x0000080601007387 */
        /*0030*/                   LDL.LU.64 R4, [R1+0x8] ;           /* 0x0000080001047983 */
        /*0040*/                   LDL.128 R8, [R1+0x10] ;            /* 0x0000100001087983 */
        /*0050*/                   FADD R2, R3, R4 ;                  /* 0x0000000403027221 */
\t\tFunction : _Z5otherv
        /*0010*/                   LDG.E R2, [R2.64] ;                /* 0x0000000402027981 */
"""

ELF = """
Fatbin elf code:
================
arch = sm_80
.nv.info._Z6kernelPf
\t<0x13>
\tAttribute:\tEIATTR_MAX_THREADS
\tFormat:\tEIFMT_SVAL
\tValue:\t0x80 0x1 0x1 \n
"""


def test_resource_usage_is_read_per_arch_and_function_skipping_ptx():
    usage = co.parse_resource_usage(RESOURCE_USAGE)
    assert usage == {("sm_80", "_Z6kernelPf"): {"REG": 168, "STACK": 8, "SHARED": 1024, "LOCAL": 0},
                     ("sm_90", "_Z6kernelPf"): {"REG": 40, "STACK": 0, "SHARED": 0, "LOCAL": 16}}


def test_local_memory_accesses_are_counted_in_bytes():
    assert co.parse_local_accesses("arch = sm_90\n" + SASS) == {("sm_90", "_Z6kernelPf"): (4 + 8, 8 + 16),
                                                                ("sm_90", "_Z5otherv"): (0, 0)}


def test_launch_bounds_are_read_from_the_elf():
    assert co.parse_max_threads(ELF) == {("sm_80", "_Z6kernelPf"): 128}


def test_demangled_cuda_names_give_op_kernel_dtype_and_template():
    assert co._cuda_identity("void jmipose::attention_cuda::dq_kernel<__nv_bfloat16, 64>("
                             "jmipose::attention_cuda::BackwardParams<__nv_bfloat16>)") == \
        ("joint_motion_attention", "dq_kernel", "bfloat16", 64)
    assert co._cuda_identity("void jmipose::jrg::(anonymous namespace)::backward_data_kernel<float>(float const*, "
                             "jmipose::jrg::(anonymous namespace)::Geometry, long)") == \
        ("joint_region_gather", "backward_data_kernel", "float32", None)


# --- the variants the kernels modules list ----------------------------------------------------------

@pytest.mark.parametrize("op", co.OPS)
def test_variants_cover_every_dispatch_configuration(op):
    from jmipose.kernels import joint_motion_attention as jma
    from jmipose.kernels import joint_region_gather as jrg

    variants = co._variants(op)
    for variant in variants:
        arguments = set(variant["kernel"].arg_names)
        assert set(variant["constexprs"]) | set(variant["signature"]) == arguments
        assert not set(variant["constexprs"]) & set(variant["signature"])
        assert set(variant["flags"]) <= set(variant["constexprs"])
    seen = {(v["name"], v["dtype"], v["config"], v["num_warps"], v["num_stages"]) for v in variants}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        if op == "joint_region_gather":
            for outs in (1, 16, 17, 32, 48, 64, 200):  # every output-channel block launch_config can pick
                config = jrg.launch_config(outs, outs, 1, 1, 6912, dtype)
                for name, blocks in (("forward", config.forward), ("backward_data", config.data),
                                     ("backward_weight", config.weight)):
                    text = f"BLOCK_P={blocks.p} BLOCK_O={blocks.o} BLOCK_C={blocks.c}"
                    assert (name, dtype, text, blocks.num_warps, None) in seen
        else:
            for head_dim in jma.COMPILED_HEAD_DIMS:
                configs = jma.launch_config(head_dim, dtype, torch.device("cuda"))
                for name, config in (("forward", configs.forward), ("backward_dq", configs.backward_dq),
                                     ("backward_dkdv", configs.backward_dkdv)):
                    text = f"d={head_dim} BLOCK_M={config.block_m} BLOCK_N={config.block_n}"
                    assert (name, dtype, text, config.num_warps, config.num_stages) in seen
    model = [v for v in variants if v["model"]]
    assert {v["name"] for v in model} == {v["name"] for v in variants}
    keys = [(v["name"], v["dtype"], v["config"], co._flags_text(v["flags"])) for v in variants]
    assert len(set(keys)) == len(keys), "a specialisation is listed twice"


@pytest.mark.parametrize("op", co.OPS)
def test_covering_selection_compiles_every_configuration_and_every_flag_value(op):
    variants = co._variants(op)
    chosen = co.select_variants(variants)
    assert co.select_variants(variants, "all") == list(range(len(variants)))
    assert len(chosen) < len(variants) / 4
    groups = {(v["name"], str(v["dtype"]), v["config"]) for v in variants}
    assert groups == {(variants[i]["name"], str(variants[i]["dtype"]), variants[i]["config"]) for i in chosen}
    for name, dtype in {(v["name"], str(v["dtype"])) for v in variants}:
        family = [v for v in variants if (v["name"], str(v["dtype"])) == (name, dtype)]
        wanted = {(flag, repr(value)) for v in family for flag, value in v["flags"].items()}
        got = {(flag, repr(value)) for i in chosen if (variants[i]["name"], str(variants[i]["dtype"])) == (name, dtype)
               for flag, value in variants[i]["flags"].items()}
        assert got == wanted, (name, dtype)
    for name, dtype in {(v["name"], str(v["dtype"])) for v in variants if v["model"]}:  # the model's are compiled
        assert any(variants[i]["model"] for i in chosen if (variants[i]["name"], str(variants[i]["dtype"])) ==
                   (name, dtype)), (name, dtype)
    for group in groups:  # the resource figures of each configuration come from its every-flag-on variant
        picked = [variants[i] for i in chosen if (variants[i]["name"], str(variants[i]["dtype"]),
                                                  variants[i]["config"]) == group]
        assert any(all(value is not False for value in v["flags"].values()) for v in picked), group


# --- real compiles -----------------------------------------------------------------------------------

@needs_triton_cuda
def test_a_model_kernel_compiles_for_sm90_with_its_resources():
    records = co.triton_records([90], keep=lambda op, v: op == "joint_motion_attention" and v["model"]
                                and v["name"] == "forward" and all(v["flags"].values()))
    assert len(records) == 1
    record = records[0]
    assert record["status"] == "ok", record["status"]
    assert record["arch"] == "sm_90" and record["dtype"] == "bfloat16" and record["model"]
    assert record["threads"] == 256  # 8 warps (launch_config)
    assert 32 <= record["registers"] <= 255
    assert record["shared_dynamic"] > 48 * 1024  # multi-stage K/V buffers beyond the default carveout
    assert record["occupancy"] % 8 == 0 and record["occupancy"] >= 8


SPILL_SCRIPT = r"""
import io, json, os, sys, contextlib, tempfile
os.environ.pop("TRITON_INTERPRET", None)
os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from jmipose.bench import compile_only as co

variant = next(v for v in co._variants("joint_motion_attention") if v["model"] and v["name"] == "forward")
kernel = variant["kernel"]
signature = {n: "constexpr" if n in variant["constexprs"] else variant["signature"][n] for n in kernel.arg_names}
log = io.StringIO()
with contextlib.redirect_stdout(log):  # triton prints ptxas's own report with TRITON_DUMP_PTXAS_LOG
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=variant["constexprs"]),
                              target=GPUTarget("cuda", 80, 32),
                              options={"num_warps": variant["num_warps"], "num_stages": variant["num_stages"],
                                       "maxnreg": 64})
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "k.cubin")
    open(path, "wb").write(compiled.asm["cubin"])
    sass = co._run_tool([co.find_cuobjdump(), "-sass", path])
print(json.dumps({"log": log.getvalue(), "counted": list(co.parse_local_accesses(sass).values())}))
"""


@needs_triton_cuda
def test_spill_bytes_counted_from_sass_match_ptxas(tmp_path):
    """The model's attention forward squeezed into 64 registers must spill; the bytes counted from its
    SASS are the ones ptxas itself reports."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path), PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", SPILL_SCRIPT], capture_output=True, text=True, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    import re

    reported = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out["log"])
    assert reported, out["log"][-2000:]
    stores, loads = int(reported.group(1)), int(reported.group(2))
    assert stores > 0 and loads > 0
    assert out["counted"] == [[stores, loads]]


# --- the CUDA library ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cuda_report(tmp_path_factory):
    from jmipose.ops._backends import CUDA_LIB_PATH

    if not CUDA_LIB_PATH.is_file():
        pytest.skip(f"the CUDA library was not built ({CUDA_LIB_PATH})")
    if co.find_cuobjdump() is None:
        pytest.skip("no cuobjdump (CUDA toolkit or triton wheel)")
    out = tmp_path_factory.mktemp("aot")
    code = cli.main(["bench", "--compile-only", "--backends", "cuda", "--json", str(out / "r.json"),
                     "--md", str(out / "r.md")])
    return code, json.loads((out / "r.json").read_text()), (out / "r.md").read_text()


def test_every_cuda_kernel_is_recorded_for_both_archs(cuda_report):
    code, document, markdown = cuda_report
    assert co.validate(document) == []
    records = document["records"]
    assert code == (0 if all(r["status"] == "ok" for r in records) else 1)
    for arch in ("sm_80", "sm_90"):
        mine = [r for r in records if r["arch"] == arch]
        kernels = {(r["op"], r["kernel"]) for r in mine}
        assert {("joint_region_gather", k) for k in ("forward_kernel", "backward_data_kernel",
                                                     "backward_weight_kernel", "backward_bias_kernel")} <= kernels
        assert {("joint_motion_attention", k) for k in ("forward_kernel", "dq_kernel", "dkdv_kernel",
                                                        "delta_kernel")} <= kernels
        assert {r["dtype"] for r in mine} == {"float32", "float16", "bfloat16"}
        assert any(r["model"] for r in mine if r["op"] == "joint_motion_attention")
    assert "## Worst kernels" in markdown and "| sm_90 |" in markdown


def _emulated_launches(lib) -> list[dict]:
    launches = []
    for i in range(lib.emu_launch_count()):
        values = (ctypes.c_longlong * 4)()
        lib.emu_launch_info(i, values)
        launches.append({"threads": values[2], "shared": values[3]})
    return launches


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_launch_facts_match_the_attention_launches(cuda_report, dtype):
    """cuda_dynamic_shared mirrors the host code: the CUDA source run under the CPU emulation launches
    forward, delta, dK/dV and dQ with exactly that dynamic shared memory, and with the block size the
    library's __launch_bounds__ declare (read from the real build)."""
    from tests.cuda_emulation.build import load_op
    from tests.ops.attention_problems import make_problem
    from tests.ops.test_joint_motion_attention_cuda_emulation import run_emulated

    lib = load_op("joint_motion_attention")
    name = str(dtype).removeprefix("torch.")
    threads = {(r["kernel"], r["config"]): r["threads"] for r in cuda_report[1]["records"]
               if r["arch"] == "sm_80" and r["op"] == "joint_motion_attention"}
    for head_dim, padded in ((16, 16), (32, 32), (48, 64), (64, 64), (128, 128)):
        launches = run_emulated(lib, make_problem(1, 1, 3, 2, head_dim, seed=head_dim), dtype)["launches"]
        assert len(launches) == 4
        for launch, kernel in zip(launches, ("forward_kernel", "delta_kernel", "dkdv_kernel", "dq_kernel")):
            template = None if kernel == "delta_kernel" else padded
            assert launch["shared"] == co.cuda_dynamic_shared("joint_motion_attention", kernel, name, template), \
                (kernel, name, head_dim)
            config = f"<{name}>" if template is None else f"<{name}, {template}>"
            assert launch["threads"] == threads[(kernel, config)], (kernel, config)


def test_cuda_launch_facts_match_the_region_gather_launches(cuda_report):
    from tests.cuda_emulation.build import load_op
    from tests.ops.joint_region_gather_cases import Case, make_inputs
    from tests.ops.test_joint_region_gather_cuda_emulation import run_emulated

    lib = load_op("joint_region_gather")
    lib.emu_reset(227 * 1024)
    case = Case(batch=1, in_channels=4, out_channels=48, height=3, width=3)  # 48 outputs: the 64-channel tile
    run_emulated(lib, case, make_inputs(case, 3, torch.float32))
    launches = _emulated_launches(lib)
    threads = {(r["kernel"], r["config"]): r["threads"] for r in cuda_report[1]["records"]
               if r["arch"] == "sm_80" and r["op"] == "joint_region_gather"}
    kernels = [("forward_kernel", "<float32, 64>"), ("backward_data_kernel", "<float32>"),
               ("backward_weight_kernel", "<float32>"), ("backward_bias_kernel", "<float32>")]
    assert len(launches) == len(kernels)
    for launch, (kernel, config) in zip(launches, kernels):
        assert launch["shared"] == co.cuda_dynamic_shared("joint_region_gather", kernel, "float32", None) == 0
        assert launch["threads"] == threads[(kernel, config)]
        assert co.cuda_model_kernel("joint_region_gather", kernel, "float32", 64 if "forward" in kernel else None)


# --- the command ---------------------------------------------------------------------------------------

def test_bad_arguments_exit_with_2(capsys):
    assert cli.main(["bench", "--compile-only", "--arch", "75"]) == 2
    assert "unknown architecture '75'" in capsys.readouterr().err
    assert cli.main(["bench", "--compile-only", "--backends", "opencl"]) == 2


def test_any_record_not_ok_makes_the_command_fail(monkeypatch, tmp_path, capsys):
    broken = co.make_record("joint_region_gather", "triton", "forward", "c", "", "bfloat16", 90, True,
                            error="compile error: CompilationError: at 12:4: incompatible shapes")
    fine = co.make_record("joint_region_gather", "cuda", "forward_kernel", "<float32, 64>", "", "float32", 90, True,
                          registers=96, threads=256)
    monkeypatch.setattr(co, "run", lambda *args, **kwargs: ([fine, broken], {"archs": "sm_90"}))
    assert cli.main(["bench", "--compile-only", "--md", str(tmp_path / "r.md")]) == 1
    out = capsys.readouterr().out
    assert "1 not ok" in out and "incompatible shapes" in out
    monkeypatch.setattr(co, "run", lambda *args, **kwargs: ([fine], {"archs": "sm_90"}))
    assert cli.main(["bench", "--compile-only"]) == 0


# --- on a GPU: the tables against the device -----------------------------------------------------------

@pytest.mark.gpu
def test_arch_limits_match_the_device():
    properties = torch.cuda.get_device_properties(0)
    arch = properties.major * 10 + properties.minor
    if arch not in co.ARCHS:
        pytest.skip(f"no limits table for sm_{arch}")
    limits = co.ARCHS[arch]
    assert properties.max_threads_per_multi_processor == 32 * limits.max_warps_per_sm
    assert properties.regs_per_multiprocessor == limits.registers_per_sm
    assert properties.shared_memory_per_multiprocessor == limits.shared_per_sm
    assert properties.shared_memory_per_block_optin == limits.max_shared_per_block


@pytest.mark.gpu
def test_registers_read_ahead_of_time_match_the_driver():
    """The model's attention forward compiled for this GPU: cuobjdump's registers and spills are what
    the driver reports once the cubin is loaded."""
    if not _has_cuda_compiler():
        pytest.skip("triton's NVIDIA backend is not installed")
    properties = torch.cuda.get_device_properties(0)
    arch = properties.major * 10 + properties.minor
    if arch not in co.ARCHS:
        pytest.skip(f"no limits table for sm_{arch}")
    code = r"""
import json, os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from jmipose.bench import compile_only as co
arch = int(sys.argv[1])
variants = co._variants("joint_motion_attention")
index = next(i for i, v in enumerate(variants) if v["model"] and v["name"] == "forward")
record = co._compile_triton("joint_motion_attention", index, arch, co.find_cuobjdump())
variant = variants[index]
kernel = variant["kernel"]
signature = {n: "constexpr" if n in variant["constexprs"] else variant["signature"][n] for n in kernel.arg_names}
attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names) if signature[n].startswith("*")}
compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=variant["constexprs"], attrs=attrs),
                          target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": variant["num_warps"], "num_stages": variant["num_stages"]})
compiled._init_handles()
print(json.dumps({"record": record, "n_regs": compiled.n_regs, "n_spills": compiled.n_spills}))
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", code, str(arch)], capture_output=True, text=True, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["record"]["registers"] == out["n_regs"]
    assert (out["record"]["spill_stores"] > 0) == (out["n_spills"] > 0)


# --- predicted GPU times (benchmarks/results/gpu-predicted) ------------------------------------------

PREDICTED = ROOT / "benchmarks" / "results" / "gpu-predicted" / "predicted.json"


def test_committed_predictions_cover_every_gpu_benchmark_shape():
    from jmipose.bench import gpu_predicted as gp

    rows = json.loads(PREDICTED.read_text())["rows"]
    ours = {(r["op"], json.dumps(r["shape"], sort_keys=True), r["pass"], r["gpu"], r["backend"]) for r in rows
            if r["kind"] == "ours" and r["expected_s"] is not None and r["bound_s"] > 0}
    for op, shape, passes, _dtype in gp.bench_shapes():
        for pass_ in passes:
            for gpu in ("A100", "H100", "H200"):
                for backend in ("cuda", "triton"):
                    assert (op, json.dumps(shape, sort_keys=True), pass_, gpu, backend) in ours
    for r in rows:  # an expectation is never below the bound it refines
        if r["kind"] == "ours":
            assert r["expected_s"] >= r["bound_s"] * 0.999
    assert any(r["kind"] == "anchor" and r["gpu"] == "H100" for r in rows)


def test_attention_bound_and_anchor_by_hand():
    from jmipose.bench import gpu_predicted as gp

    h100 = next(g for g in gp.GPUS if g.name == "H100")
    shape = {"B": 8, "h": 1, "N_m": 1728, "N_j": 1728, "d": 48}
    flops = 8 * 8 * 1 * 1728 * 1728 * 48  # two directions x (QK^T + PV) x 2 FLOPs per multiply-add
    row = gp.predict_backend("joint_motion_attention", "triton", shape, "fwd", h100, [])
    assert row["bound_s"] == pytest.approx(flops / 989e12)  # compute-bound: 13.4 MB move in 4 us
    anchor = gp.anchor_rows("joint_motion_attention", {**shape, "N_m": 6912, "N_j": 6912}, "fwd", h100)[0]
    # FlashAttention-2 at the 4k bar (321 TFLOP/s, d = 64), d = 48 in its 64-wide kernel
    assert anchor["anchor_s"] == pytest.approx(8 * 8 * 6912 * 6912 * 48 / (321e12 * 48 / 64))


def test_measured_records_are_set_beside_the_prediction():
    from jmipose.bench import gpu_predicted as gp

    shape = {"B": 8, "h": 1, "N_m": 1728, "N_j": 1728, "d": 48}
    predicted = [{"op": "joint_motion_attention", "shape": shape, "pass": "fwd", "backend": "triton", "gpu": "H200",
                  "bound_s": 1e-5, "expected_s": 2e-5, "anchor_s": None}]
    measured = [{"op": "joint_motion_attention", "shape": dict(shape), "pass": "fwd", "backend": "triton",
                 "baseline": "none", "device": "cuda", "status": "ok", "median_s": 5e-5,
                 "environment": {"gpu": "NVIDIA H200"}},
                {"op": "joint_motion_attention", "shape": dict(shape), "pass": "fwd", "backend": "triton",
                 "baseline": "none", "device": "cpu", "status": "ok", "median_s": 1.0, "environment": {}}]
    text = gp.compare(measured, predicted)
    assert len(text.splitlines()) == 2
    line = text.splitlines()[1]
    assert "H200" in line and "0.050ms" in line and "0.020" in line and line.endswith("2.50x")
