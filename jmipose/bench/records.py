"""Benchmark results as data: one record per measurement, their schema, and the JSON file.

A record is a flat dict (JSON-ready):

================  ==========================================================================
key               meaning
================  ==========================================================================
op                ``joint_region_gather``, ``joint_motion_attention`` or ``model``
variant           what runs: the op's mode (``modulated``, ``both directions``) or the model
                  part (``head``, ``model``)
pass              ``fwd`` or ``fwd+bwd`` (for the model: inference, or one training step)
backend           the implementation: a jmipose backend (cpp, cuda, triton), ``reference``
                  (eager PyTorch), ``torchvision``, ``sdpa``; for the model ``kernels`` or
                  ``reference`` (``use_kernels``)
baseline          ``none`` (ours) or which baseline this is: eager, compile, torchvision, sdpa
shape             dict of the sizes
dtype, device     e.g. ``float32``, ``cpu``
status            ``ok``, ``skipped`` or ``failed`` (then ``reason`` says why; times are null)
median_s, iqr_s   median and inter-quartile range of the wall time of one call, seconds
q1_s, q3_s        the quartiles themselves; ``repeats`` how many timed calls
cpu_s             median process CPU time of one call (all threads), seconds
peak_mem_bytes    memory one call adds at its peak (inputs excluded; ``jmipose.bench.timing``)
flops, bytes      useful work and compulsory traffic of one call (``jmipose.bench.roofline``)
tflops, ...       achieved TFLOP/s and GB/s; on a GPU of known peak also their fractions
fps               model records: windows per second (batch / median_s)
environment       torch, triton, CPU model, GPU name, threads (``jmipose.info.environment``)
================  ==========================================================================
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jmipose.bench.roofline import achieved, device_peak
from jmipose.bench.timing import BASELINES, PASSES, Case, quartiles

SCHEMA_VERSION = 1
STATUSES = ("ok", "skipped", "failed")
NUMBER = (int, float)
# key -> accepted types (None allowed where listed)
SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "op": ((str,), False),
    "variant": ((str,), False),
    "pass": ((str,), False),
    "backend": ((str,), False),
    "baseline": ((str,), False),
    "shape": ((dict,), False),
    "dtype": ((str,), False),
    "device": ((str,), False),
    "status": ((str,), False),
    "reason": ((str,), True),
    "median_s": (NUMBER, True),
    "iqr_s": (NUMBER, True),
    "q1_s": (NUMBER, True),
    "q3_s": (NUMBER, True),
    "repeats": ((int,), False),
    "cpu_s": (NUMBER, True),
    "peak_mem_bytes": ((int,), True),
    "flops": (NUMBER, True),
    "bytes": (NUMBER, True),
    "tflops": (NUMBER, True),
    "bandwidth_gbs": (NUMBER, True),
    "tflops_fraction": (NUMBER, True),
    "bandwidth_fraction": (NUMBER, True),
    "environment": ((dict,), False),
}
ENVIRONMENT_KEYS = ("torch", "triton", "cpu", "gpu", "threads")


def make_record(case: Case, walls: list[float] | None, cpus: list[float] | None, memory: int | None,
                reason: str | None, memory_note: str | None = None,
                environment: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of one case from its timed calls (None or empty: skipped or failed)."""
    if environment is None:
        from jmipose.info import environment as current_environment

        environment = current_environment(case.device)
    status = "ok" if walls else ("skipped" if case.skip else "failed")
    record: dict[str, Any] = {
        "op": case.op, "variant": case.variant, "pass": case.pass_, "backend": case.backend,
        "baseline": case.baseline, "shape": dict(case.shape), "dtype": case.dtype, "device": case.device,
        "status": status, "reason": reason if status != "ok" else memory_note,
        "median_s": None, "iqr_s": None, "q1_s": None, "q3_s": None, "repeats": len(walls or []),
        "cpu_s": None, "peak_mem_bytes": memory, "flops": case.flops, "bytes": case.bytes_moved,
    }
    if walls:
        q1, median, q3 = quartiles(walls)
        record.update(median_s=median, iqr_s=q3 - q1, q1_s=q1, q3_s=q3)
        record["cpu_s"] = quartiles(cpus)[1] if cpus else None
    peak = device_peak(environment.get("gpu"), case.dtype) if case.device.startswith("cuda") else None
    record.update(achieved(case.flops, case.bytes_moved, record["median_s"], peak))
    for key, value in case.extra.items():
        record[key] = value
    if "batch" in case.extra and record["median_s"]:
        record["fps"] = case.extra["batch"] / record["median_s"]
    record["environment"] = dict(environment)
    return record


def validate_record(record: dict[str, Any]) -> list[str]:
    """Problems with one record (empty when it follows the schema)."""
    problems = []
    for key, (types, nullable) in SCHEMA.items():
        if key not in record:
            problems.append(f"missing key {key!r}")
            continue
        value = record[key]
        if value is None:
            if not nullable:
                problems.append(f"{key} is null")
        elif isinstance(value, bool) or not isinstance(value, types):
            problems.append(f"{key} = {value!r}: expected {'/'.join(t.__name__ for t in types)}")
    if problems:
        return problems
    if record["pass"] not in PASSES:
        problems.append(f"pass = {record['pass']!r}: expected one of {PASSES}")
    if record["baseline"] not in BASELINES:
        problems.append(f"baseline = {record['baseline']!r}: expected one of {BASELINES}")
    if record["status"] not in STATUSES:
        problems.append(f"status = {record['status']!r}: expected one of {STATUSES}")
    if record["status"] == "ok":
        for key in ("median_s", "iqr_s"):
            if record[key] is None or record[key] < 0:
                problems.append(f"status ok but {key} = {record[key]!r}")
        if record["median_s"] is not None and record["median_s"] <= 0:
            problems.append(f"median_s = {record['median_s']} must be > 0")
    elif not record["reason"]:
        problems.append(f"status {record['status']} without a reason")
    for key in ENVIRONMENT_KEYS:
        if key not in record["environment"]:
            problems.append(f"environment lacks {key!r}")
    return problems


def validate(document: dict[str, Any]) -> list[str]:
    """Problems with a whole results document (``write_json``'s layout)."""
    problems = []
    if document.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version = {document.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    records = document.get("records")
    if not isinstance(records, list) or not records:
        return problems + ["records must be a non-empty list"]
    for index, record in enumerate(records):
        problems += [f"record {index} ({record.get('op')} {record.get('backend')}): {p}"
                     for p in validate_record(record)]
    return problems


def document(records: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON file's content: the records and how they were taken."""
    return {"schema_version": SCHEMA_VERSION, "settings": settings, "records": records}


def write_json(path: str | os.PathLike, records: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document(records, settings), indent=1) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to be a results file") from None


def shape_label(shape: dict[str, Any]) -> str:
    """A short label of a record's shape for tables and charts."""
    if "channels" in shape:  # joint_region_gather
        return (f"B{shape['batch']} C{shape['channels']} {shape['height']}x{shape['width']} "
                f"k{shape['kernel']} d{shape['dilation']} G{shape['offset_groups']}")
    if "N_m" in shape:  # joint_motion_attention
        tokens = shape["N_m"] if shape["N_m"] == shape["N_j"] else f"{shape['N_m']}/{shape['N_j']}"
        return f"B{shape['B']} h{shape['h']} d{shape['d']} N{tokens}"
    if "backbone" in shape:  # model
        size = f"{shape['height']}x{shape['width']}"
        return f"{shape.get('config', '')} {shape['backbone']} B{shape['batch']} {size}"
    return " ".join(f"{k}={v}" for k, v in shape.items())
