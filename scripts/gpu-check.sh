#!/usr/bin/env bash
# One prepared run on a lent GPU machine: install, GPU tests, the benchmark (copied from the shared
# template; keep it current).  Run from the project root: bash scripts/gpu-check.sh
# That machine has no package registry: the install uses what its image holds (Python 3.12, torch 2.11
# with CUDA 13, triton 3.6, torchvision 0.26, ninja, setuptools, pytest, hypothesis, pytest-benchmark).
# Results go to $OUT, which comes back (at most 8 files: env.txt, install.log, pytest-gpu.txt, bench.log,
# bench-gpu.{json,md,png}, predicted-vs-measured.txt).
set -u
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } > "$OUT/env.txt" 2>&1
if ! python3 -m pip install --no-build-isolation --no-deps . > "$OUT/install.log" 2>&1; then
  tail -40 "$OUT/install.log"; exit 1
fi
python3 -c "import jmipose; print(jmipose.ops.backends())" 2>&1 | tee -a "$OUT/env.txt"
timeout 300 python3 -m pytest -m gpu -q -x -p no:cacheprovider 2>&1 | tail -60 > "$OUT/pytest-gpu.txt"; tail -5 "$OUT/pytest-gpu.txt"
# The benchmark, one op per call so that a timeout costs one op, not all; then one report.  Copy
# bench-gpu.{json,md,png} into benchmarks/results/gpu/ (the PNG only when matplotlib was there; else
# `jmipose bench --from-json bench-gpu.json --md ... --plot ...` renders it on any machine).
for op in joint_region_gather joint_motion_attention model; do
  timeout 200 jmipose bench --device cuda --ops $op --json "$OUT/bench-gpu-$op.json" >> "$OUT/bench.log" 2>&1 || echo "bench $op: exit $?" >> "$OUT/bench.log"
done
jmipose bench --from-json "$OUT"/bench-gpu-*.json --json "$OUT/bench-gpu.json" --md "$OUT/bench-gpu.md" --plot "$OUT/bench-gpu.png" > /dev/null 2>> "$OUT/bench.log" && rm -f "$OUT"/bench-gpu-*.json
tail -40 "$OUT/bench-gpu.md" 2>/dev/null || tail -20 "$OUT/bench.log"
# Measured vs predicted (benchmarks/results/gpu-predicted: roofline bound, occupancy-limited expectation,
# FlashAttention-2 anchor) for every measured shape of our backends and the anchored baselines.
python3 -m jmipose.bench.gpu_predicted --compare "$OUT"/bench-gpu*.json > "$OUT/predicted-vs-measured.txt" 2>&1
cat "$OUT/predicted-vs-measured.txt"
