"""The benchmark machinery's arithmetic and bookkeeping, on hand-computed cases (no timing asserted)."""

from __future__ import annotations

import time

import pytest

from jmipose.bench import records, roofline, targets, timing
from jmipose.bench.timing import Case, Settings

ENV = {"torch": "x", "triton": None, "cpu": "test cpu", "gpu": None, "threads": 1, "cores": 1}


def test_quartiles_match_a_hand_computed_case():
    # exclusive method: positions (n+1)p over the sorted samples 1..8 -> 2.25, 4.5, 6.75
    q1, median, q3 = timing.quartiles([8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0])
    assert (q1, median, q3) == (2.25, 4.5, 6.75)
    assert timing.quartiles([3.0]) == (3.0, 3.0, 3.0)
    assert timing.iqr_ok([1.0, 1.0, 1.0, 1.05], 0.10)
    assert not timing.iqr_ok([1.0, 2.0, 1.0, 2.0], 0.10)
    with pytest.raises(ValueError, match="no samples"):
        timing.quartiles([])


def test_region_gather_flops_and_bytes_by_hand():
    shape = {"batch": 2, "in_channels": 4, "out_channels": 6, "groups": 2, "kernel": 3, "offset_groups": 1,
             "height": 5, "width": 7, "out_h": 5, "out_w": 7}
    forward = 2 * 2 * 6 * (4 // 2) * 9 * 5 * 7
    assert roofline.region_gather_flops(shape, "fwd") == forward
    assert roofline.region_gather_flops(shape, "fwd+bwd") == 3 * forward
    # input 2*4*35, offset 2*18*35, mask 2*9*35, weight 6*2*9, bias 6, output 2*6*35 (float32)
    inputs = 280 + 1260 + 630 + 108 + 6
    output = 420
    assert roofline.region_gather_bytes(shape, "fwd", "float32") == 4 * (inputs + output)
    assert roofline.region_gather_bytes(shape, "fwd+bwd", "float32") == 4 * (3 * inputs + 2 * output)
    assert roofline.region_gather_bytes(shape, "fwd", "bfloat16") == 2 * (inputs + output)


def test_motion_attention_flops_and_bytes_by_hand():
    shape = {"B": 2, "h": 3, "N_m": 10, "N_j": 20, "d": 16}
    forward = 8 * 2 * 3 * 10 * 20 * 16
    assert roofline.motion_attention_flops(shape, "fwd") == forward
    assert roofline.motion_attention_flops(shape, "fwd+bwd") == 3.5 * forward
    side = 2 * 3 * 16 * (10 + 20)  # elements of one tensor per side, both sides
    lse = 4 * 2 * 3 * 30
    assert roofline.motion_attention_bytes(shape, "fwd", "bfloat16") == 2 * 5 * side + lse
    backward = 2 * 8 * side + lse
    assert roofline.motion_attention_bytes(shape, "fwd+bwd", "bfloat16") == 2 * 5 * side + lse + backward


def test_device_peaks_prefer_the_specific_name():
    assert roofline.device_peak("NVIDIA H100 PCIe", "bfloat16") == (756.0, 2000.0)
    assert roofline.device_peak("NVIDIA H100 80GB HBM3", "bfloat16") == (989.0, 3350.0)
    assert roofline.device_peak("NVIDIA H100 80GB HBM3", "float32") == (67.0, 3350.0)
    assert roofline.device_peak("NVIDIA H200", "float16") == (989.0, 4800.0)
    assert roofline.device_peak("Some Future GPU", "float32") is None
    assert roofline.device_peak(None, "float32") is None


def test_achieved_throughput_and_fraction_of_peak():
    result = roofline.achieved(flops=2e12, bytes_moved=3e9, seconds=0.5, peak=(100.0, 2000.0))
    assert result["tflops"] == pytest.approx(4.0)
    assert result["bandwidth_gbs"] == pytest.approx(6.0)
    assert result["tflops_fraction"] == pytest.approx(0.04)
    assert result["bandwidth_fraction"] == pytest.approx(0.003)
    empty = roofline.achieved(2e12, 3e9, None)
    assert all(value is None for value in empty.values())
    assert roofline.achieved(2e12, None, 1.0)["tflops_fraction"] is None


class Sleeper:
    """A runner of known duration: the harness must measure at least the sleep."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls, self.resets = seconds, 0, 0

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(self.seconds)

    def reset(self) -> None:
        self.resets += 1


def _case(backend: str, baseline: str, make, skip=None, **kw) -> Case:
    return Case("toy", "mode", "fwd", backend, baseline, {"n": 1}, "float32", "cpu", make=make, skip=skip,
                **kw)


def test_measure_group_interleaves_and_records_skips_and_failures():
    fast, slow = Sleeper(0.002), Sleeper(0.006)

    def broken():
        raise RuntimeError("out of memory: tried to allocate 9 GB\nsecond line")

    group = [_case("cpp", "none", lambda: fast, flops=1e9, bytes_moved=1e6),
             _case("reference", "eager", lambda: slow),
             _case("torchvision", "torchvision", None,
                   skip="torchvision not importable (ModuleNotFoundError)"),
             _case("reference", "compile", broken)]
    settings = Settings(min_repeats=3, max_repeats=4, warmup=1, group_budget_s=5.0, memory=True)
    ours, eager, tv, compiled = timing.measure_group(group, settings, ENV)
    assert fast.calls == slow.calls  # interleaved rounds: every implementation runs as often
    assert fast.calls == 1 + ours["repeats"]  # warm-up, timed rounds (the first also measures memory)
    assert fast.resets >= 1  # gradients dropped before the memory baseline
    assert 3 <= ours["repeats"] <= 4
    assert ours["status"] == "ok" and ours["median_s"] >= 0.002 and eager["median_s"] >= 0.006
    assert ours["q1_s"] <= ours["median_s"] <= ours["q3_s"]
    assert ours["iqr_s"] == pytest.approx(ours["q3_s"] - ours["q1_s"])
    assert ours["tflops"] == pytest.approx(1e9 / ours["median_s"] / 1e12)
    assert ours["peak_mem_bytes"] is not None and ours["peak_mem_bytes"] >= 0
    assert tv["status"] == "skipped" and "torchvision" in tv["reason"] and tv["median_s"] is None
    assert compiled["status"] == "failed"
    assert compiled["reason"].startswith("failed: RuntimeError: out of memory")
    assert "second line" not in compiled["reason"]
    for record in (ours, eager, tv, compiled):
        assert records.validate_record(record) == [], record


def test_case_rejects_bad_fields():
    with pytest.raises(ValueError, match="pass_"):
        Case("toy", "m", "backward", "cpp", "none", {}, "float32", "cpu", make=Sleeper)
    with pytest.raises(ValueError, match="baseline"):
        Case("toy", "m", "fwd", "cpp", "mkl", {}, "float32", "cpu", make=Sleeper)
    with pytest.raises(ValueError, match="no skip reason"):
        Case("toy", "m", "fwd", "cpp", "none", {}, "float32", "cpu", make=None)


def _record(**overrides) -> dict:
    base = {"op": "joint_motion_attention", "variant": "both directions", "pass": "fwd+bwd", "backend": "cpp",
            "baseline": "none", "shape": {"B": 8, "h": 1, "N_m": 1728, "N_j": 1728, "d": 48},
            "dtype": "float32",
            "device": "cpu", "status": "ok", "reason": None, "median_s": 1.0, "iqr_s": 0.01, "q1_s": 0.99,
            "q3_s": 1.0, "repeats": 5, "cpu_s": 2.0, "peak_mem_bytes": 1000, "flops": None, "bytes": None,
            "tflops": None, "bandwidth_gbs": None, "tflops_fraction": None, "bandwidth_fraction": None,
            "environment": dict(ENV)}
    base.update(overrides)
    return base


def test_validate_record_names_each_problem():
    assert records.validate_record(_record()) == []
    without_median = {k: v for k, v in _record().items() if k != "median_s"}
    assert "missing key 'median_s'" in records.validate_record(without_median)
    assert any("pass" in p for p in records.validate_record(_record(**{"pass": "bwd"})))
    assert any("baseline" in p for p in records.validate_record(_record(baseline="cudnn")))
    skipped = _record(status="skipped", median_s=None)
    assert any("without a reason" in p for p in records.validate_record(skipped))
    assert any("median_s" in p for p in records.validate_record(_record(median_s=-1.0)))
    no_gpu = _record(environment={k: v for k, v in ENV.items() if k != "gpu"})
    assert any("environment lacks 'gpu'" in p for p in records.validate_record(no_gpu))
    assert any("expected int" in p for p in records.validate_record(_record(peak_mem_bytes=True)))


def _result(key: str, recs: list[dict]) -> targets.Result:
    target = next(t for t in targets.TARGETS if t.key == key)
    return target.evaluate(recs)


def test_speedup_target_passes_fails_and_reports_missing_records():
    ours = _record(median_s=1.0)
    eager = _record(backend="reference", baseline="eager", median_s=3.5)
    sdpa = _record(backend="sdpa", baseline="sdpa", median_s=0.9)
    assert _result("B-cpu-eager", [ours, eager]) == targets.Result("pass", "3.50x (cpp); CPU-time ratio 1.00x")
    assert _result("B-cpu-sdpa", [ours, sdpa]).status == "fail"
    assert _result("B-cpu-sdpa", [ours]).status == "not measured"
    skipped = _record(backend="sdpa", baseline="sdpa", status="skipped", median_s=None, reason="x")
    assert _result("B-cpu-sdpa", [ours, skipped]).status == "not measured"
    # a GPU target is never met by CPU records
    assert _result("B-gpu-sdpa", [ours, sdpa]).status == "not measured"


def test_region_gather_targets_use_the_quick_stand_in_and_say_so():
    shape = {"batch": 2, "channels": 48, "height": 96, "width": 72, "kernel": 3, "dilation": 1,
             "offset_groups": 1}
    common = {"op": "joint_region_gather", "variant": "modulated", "shape": shape}
    ours = _record(**common, median_s=1.0, peak_mem_bytes=100 * 2**20)
    tv = _record(**common, backend="torchvision", baseline="torchvision", median_s=2.5,
                 peak_mem_bytes=400 * 2**20)
    result = _result("A-cpu-tv", [ours, tv])
    assert result.status == "pass" and "batch=2 (quick stand-in)" in result.measured
    memory = _result("A-cpu-mem", [ours, tv])
    assert memory.status == "pass" and memory.measured.startswith("0.25 (100 MB vs 400 MB)")
    # at the real target shape the stand-in is not used
    full = {**shape, "batch": 32}
    ours32 = _record(**{**common, "shape": full}, median_s=1.0)
    tv32 = _record(**{**common, "shape": full}, backend="torchvision", baseline="torchvision", median_s=1.5)
    assert _result("A-cpu-tv", [ours, tv, ours32, tv32]).measured.startswith("1.50x (cpp); CPU-time")
    assert _result("A-cpu-tv", [ours, tv, ours32, tv32]).status == "fail"
    never = _result("A-cpu-never-slower", [ours, tv, ours32, tv32])
    assert never.status == "pass" and never.measured.startswith("min 1.50x (B32")


def test_linear_memory_target_tells_linear_from_quadratic():
    def at(n: int, peak: int) -> dict:
        shape = {"B": 1, "h": 1, "N_m": n, "N_j": n, "d": 48}
        return _record(shape=shape, peak_mem_bytes=peak, **{"pass": "fwd"})

    assert _result("B-cpu-linear", [at(1728, 1000), at(6912, 4100)]).status == "pass"
    quadratic = _result("B-cpu-linear", [at(1728, 1000), at(6912, 16000)])
    assert quadratic.status == "fail" and "x16.0" in quadratic.measured
    assert _result("B-cpu-linear", [at(1728, 1000)]).status == "not measured"


def test_gpu_records_report_achieved_throughput_against_the_device_peak():
    """The CUDA columns, from records made as a GPU run makes them (no GPU needed)."""
    from jmipose.bench import markdown

    env = {**ENV, "gpu": "NVIDIA H100 80GB HBM3"}
    shape = {"B": 32, "h": 1, "N_m": 6912, "N_j": 6912, "d": 48}
    flops = roofline.motion_attention_flops(shape, "fwd+bwd")
    bytes_moved = roofline.motion_attention_bytes(shape, "fwd+bwd", "bfloat16")
    seconds = flops / (0.5 * 989e12)  # exactly half the bfloat16 peak

    def case(backend, baseline):
        return Case("joint_motion_attention", "both directions", "fwd+bwd", backend, baseline, shape, "bfloat16",
                    "cuda", make=Sleeper, flops=flops, bytes_moved=bytes_moved)

    ours = records.make_record(case("cuda", "none"), [seconds] * 3, [0.001] * 3, 10 * 2**20, None, None, env)
    sdpa = records.make_record(case("sdpa", "sdpa"), [2 * seconds] * 3, [0.001] * 3, 12 * 2**20, None, None, env)
    assert ours["tflops"] == pytest.approx(494.5)
    assert ours["tflops_fraction"] == pytest.approx(0.5)
    assert ours["bandwidth_gbs"] == pytest.approx(bytes_moved / seconds / 1e9)
    assert ours["bandwidth_fraction"] == pytest.approx(ours["bandwidth_gbs"] / 3350.0)
    assert _result("B-gpu-sdpa", [ours, sdpa]) == targets.Result("pass", "2.00x (cuda)")
    assert _result("B-gpu-tflops", [ours]).measured == "494.5 TFLOP/s = 50.0% of peak"
    text = markdown.render([ours, sdpa])
    assert "| TFLOP/s | % peak | GB/s |" in text
    assert "| 494.5 | 50.0% |" in text
