"""Build of jmipose's compiled backends.

The C++ and CUDA sources under ``csrc/`` do not include or link against libtorch: they export a
small C ABI (pointers, sizes, strides, a CUDA stream) that ``jmipose/ops/_backends.py`` binds with
ctypes.  So the build needs no torch, and one build serves every torch version.

Two shared libraries are written into ``jmipose/_lib/``:

* ``libjmipose_cpu.so``  every ``csrc/**/*.cpp``, always built (g++ -O3 -fopenmp).
* ``libjmipose_cuda.so`` every ``csrc/**/*.cu``, built when nvcc is found (cudart linked statically).

plus ``build_info.json`` describing what was built and how.  Build knobs (environment):

* ``JMIPOSE_CUDA``       ``auto`` (default: build when nvcc is found), ``1`` (require it), ``0`` (skip).
* ``JMIPOSE_CUDA_ARCH``  compute capabilities, e.g. ``"80;90"`` (default) or ``"8.6 9.0+PTX"``;
                         PTX is embedded for the newest one unless some entry already says ``+PTX``.
* ``JMIPOSE_CPU_ARCH``   value for ``-march=`` (default: none, portable code; ``native`` for speed).
* ``JMIPOSE_SANITIZE``   ``1`` builds the C++ library with AddressSanitizer and UBSan.
* ``JMIPOSE_DEBUG``      ``1`` builds with ``-O0 -g``.
* ``MAX_JOBS``           parallel compile jobs (default: from CPU count and free memory).
* ``CXX``, ``NVCC``, ``CUDA_HOME``  the compilers to use.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
CPU_LIB = "libjmipose_cpu.so"
CUDA_LIB = "libjmipose_cuda.so"


def _env_flag(name: str, default: str) -> str:
    return os.environ.get(name, default).strip().lower()


def _find_nvcc() -> str | None:
    candidates = [os.environ.get("NVCC")]
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home:
        candidates.append(str(Path(cuda_home) / "bin" / "nvcc"))
    candidates += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    for cand in candidates:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def _tool_version(cmd: list[str]) -> str:
    try:
        text = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    releases = [line for line in lines if "release" in line]  # nvcc: "Cuda compilation tools, release 13.0, V13.0.88"
    return (releases or lines or ["unknown"])[0]


def _parse_archs(spec: str) -> list[str]:
    """Turn ``"80;90"``/``"8.0 9.0+PTX"`` into nvcc -gencode flags."""
    entries = [e for e in re.split(r"[;,\s]+", spec.strip()) if e]
    if not entries:
        raise SystemExit(f"JMIPOSE_CUDA_ARCH={spec!r}: expected compute capabilities such as '80;90'")
    parsed = []
    for entry in entries:
        ptx = entry.upper().endswith("+PTX")
        cc = entry[:-4] if ptx else entry
        cc = cc.replace(".", "").replace("sm_", "").replace("compute_", "")
        if not re.fullmatch(r"\d{2,3}[af]?", cc):
            raise SystemExit(f"JMIPOSE_CUDA_ARCH entry {entry!r}: expected e.g. '80', '9.0' or '9.0+PTX'")
        parsed.append((cc, ptx))
    if not any(ptx for _, ptx in parsed):
        parsed[-1] = (parsed[-1][0], True)  # PTX of the newest arch keeps future GPUs working
    flags = []
    for cc, ptx in parsed:
        flags.append(f"-gencode=arch=compute_{cc},code=sm_{cc}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{cc},code=compute_{cc}")
    return flags


def _default_jobs() -> int:
    if os.environ.get("MAX_JOBS"):
        try:
            return max(1, int(os.environ["MAX_JOBS"]))
        except ValueError as exc:
            raise SystemExit(f"MAX_JOBS={os.environ['MAX_JOBS']!r}: expected a positive integer") from exc
    jobs = os.cpu_count() or 1
    try:  # nvcc can take ~2 GB per job; do not let a small machine swap itself to death
        with open("/proc/meminfo") as f:
            avail_kb = int(next(line for line in f if line.startswith("MemAvailable")).split()[1])
        jobs = min(jobs, max(1, avail_kb // (2 * 1024 * 1024)))
    except (OSError, StopIteration, ValueError):
        pass
    return jobs


def _ninja() -> str:
    try:
        import ninja  # the PyPI package, listed in build-system.requires

        return str(Path(ninja.BIN_DIR) / "ninja")
    except ImportError:
        found = shutil.which("ninja")
        if not found:
            raise SystemExit("ninja not found: `pip install ninja` (it is a build requirement)") from None
        return found


def _escape(path: Path | str) -> str:
    return str(path).replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def _library_rules(sources: list[Path], obj_dir: Path, compile_rule: str, link_rule: str, library: Path,
                   header_deps: str) -> list[str]:
    """build.ninja lines that compile each source with ``compile_rule`` into ``obj_dir`` (an object named
    after the source's path under csrc/, rebuilt when any header changes) and link them into ``library``."""
    objects = [obj_dir / (src.relative_to(CSRC).as_posix().replace("/", "__") + ".o") for src in sources]
    lines = [f"build {_escape(obj)}: {compile_rule} {_escape(src)} | {header_deps}"
             for src, obj in zip(sources, objects, strict=True)]
    lines.append(f"build {_escape(library)}: {link_rule} {' '.join(_escape(o) for o in objects)}")
    return lines


class NinjaBuildExt(build_ext):
    """Writes build.ninja for csrc/ and runs ninja; outputs go to <build_lib or source>/jmipose/_lib."""

    def run(self) -> None:  # noqa: D401 - setuptools hook
        pkg_root = ROOT if self.inplace else Path(self.build_lib).resolve()
        self._out_dir = pkg_root / "jmipose" / "_lib"
        self._out_dir.mkdir(parents=True, exist_ok=True)
        build_dir = Path(self.build_temp).resolve() / "ninja"
        build_dir.mkdir(parents=True, exist_ok=True)

        cuda_mode = _env_flag("JMIPOSE_CUDA", "auto")
        if cuda_mode not in {"auto", "0", "1", "off", "on", "false", "true"}:
            raise SystemExit(f"JMIPOSE_CUDA={cuda_mode!r}: expected auto, 1 or 0")
        want_cuda = cuda_mode not in {"0", "off", "false"}
        nvcc = _find_nvcc() if want_cuda else None
        if cuda_mode in {"1", "on", "true"} and nvcc is None:
            raise SystemExit("JMIPOSE_CUDA=1 but nvcc was not found (set CUDA_HOME or NVCC)")
        sanitize = _env_flag("JMIPOSE_SANITIZE", "0") in {"1", "on", "true"}
        debug = _env_flag("JMIPOSE_DEBUG", "0") in {"1", "on", "true"}
        cxx = os.environ.get("CXX", "g++")
        cpu_arch = os.environ.get("JMIPOSE_CPU_ARCH", "").strip()

        cxxflags = ["-std=c++17", "-fPIC", "-fopenmp", "-fvisibility=hidden", "-Wall", "-Wextra",
                    "-Wno-unused-parameter", f"-I{CSRC}"]
        if debug:
            cxxflags += ["-O0", "-g"]
        elif sanitize:  # -O1: what the sanitizers are tuned for, asserts on, and it compiles in a fraction
            cxxflags += ["-O1"]  # of the -O3 time (the vectorised kernels are large)
        else:
            cxxflags += ["-O3", "-DNDEBUG"]
        if cpu_arch:
            cxxflags.append(f"-march={cpu_arch}")
        ldflags = ["-shared", "-fopenmp"]
        if sanitize:
            san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
            cxxflags += san + ["-g"]
            ldflags += san

        cpp_sources = sorted(CSRC.rglob("*.cpp"))
        cu_sources = sorted(CSRC.rglob("*.cu")) if nvcc else []
        headers = sorted(list(CSRC.rglob("*.h")) + list(CSRC.rglob("*.cuh")))
        if not cpp_sources:
            raise SystemExit(f"no C++ sources found under {CSRC}")

        lines = [
            "ninja_required_version = 1.3",
            f"cxx = {cxx}",
            f"cxxflags = {' '.join(shlex.quote(f) for f in cxxflags)}",
            f"ldflags = {' '.join(ldflags)}",
            "rule cxx",
            "  command = $cxx $cxxflags -MMD -MF $out.d -c $in -o $out",
            "  depfile = $out.d",
            "  deps = gcc",
            "  description = CXX $in",
            "rule link_cxx",
            "  command = $cxx $in -o $out $ldflags",
            "  description = LINK $out",
        ]
        hdr_deps = " ".join(_escape(h) for h in headers)
        cpu_out = self._out_dir / CPU_LIB
        lines += _library_rules(cpp_sources, build_dir / "cpu", "cxx", "link_cxx", cpu_out, hdr_deps)
        outputs = [cpu_out]

        gencode: list[str] = []
        arch_spec = os.environ.get("JMIPOSE_CUDA_ARCH", "80;90")
        if nvcc:
            gencode = _parse_archs(arch_spec)
            nvccflags = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
                         "--expt-relaxed-constexpr", "-lineinfo", f"-I{CSRC}"] + gencode
            lines += [
                f"nvcc = {nvcc}",
                f"nvccflags = {' '.join(shlex.quote(f) for f in nvccflags)}",
                "rule nvcc",
                "  command = $nvcc $nvccflags -c $in -o $out",
                "  description = NVCC $in",
                "rule link_cuda",
                "  command = $nvcc -shared $nvccflags -cudart static $in -o $out",
                "  description = LINK $out",
            ]
            cuda_out = self._out_dir / CUDA_LIB
            lines += _library_rules(cu_sources, build_dir / "cuda", "nvcc", "link_cuda", cuda_out, hdr_deps)
            outputs.append(cuda_out)
        elif (self._out_dir / CUDA_LIB).exists():
            (self._out_dir / CUDA_LIB).unlink()  # never ship a stale CUDA library from an earlier build

        (build_dir / "build.ninja").write_text("\n".join(lines) + "\n")
        jobs = _default_jobs()
        info = {
            "cxx": _tool_version([cxx, "--version"]),
            "cxxflags": cxxflags,
            "ldflags": ldflags,
            "cuda": bool(nvcc),
            "cuda_skipped_reason": None if nvcc else ("JMIPOSE_CUDA=0" if not want_cuda else "nvcc not found"),
            "nvcc": _tool_version([nvcc, "--version"]) if nvcc else None,
            "cuda_arch": arch_spec if nvcc else None,
            "gencode": gencode,
            "sanitize": sanitize,
            "debug": debug,
            "jobs": jobs,
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        print("jmipose build configuration:\n" + json.dumps(info, indent=2), flush=True)
        cmd = [_ninja(), "-C", str(build_dir), "-j", str(jobs)]
        print("running " + " ".join(cmd), flush=True)
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            raise SystemExit(
                f"jmipose: compiling the native backends failed (ninja exit code {proc.returncode}); "
                "the compiler's messages are above. Set JMIPOSE_CUDA=0 to build without CUDA."
            )
        (self._out_dir / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        self._outputs = [str(p) for p in outputs] + [str(self._out_dir / "build_info.json")]

    def get_outputs(self) -> list[str]:
        return list(getattr(self, "_outputs", []))


setup(
    ext_modules=[Extension("jmipose._lib.native", sources=[])],
    cmdclass={"build_ext": NinjaBuildExt},
)
