"""Where a jitted program's time goes: capture a profiler trace and summarise the device kernels.

    summary = profiling.device_summary(lambda: step(state, batch), repeats=5, trace_dir=...)

`summary` has the wall time per call, the device busy time per call (union of kernel intervals; the rest
is launch gaps), kernels per call, and the top kernels by total time. Reads the Perfetto JSON that
`jax.profiler.trace(create_perfetto_trace=True)` writes, so it works wherever JAX's profiler does; on a
backend without device tracks (CPU) the kernel fields are empty and only the wall time is meaningful.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time
from typing import Any, Callable

import jax


def _device_events(trace: dict) -> list[dict]:
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    device_pids = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
                   and str(e.get("args", {}).get("name", "")).startswith("/device:")}
    return [e for e in events if e.get("ph") == "X" and e.get("pid") in device_pids and "dur" in e]


def _busy_us(events: list[dict]) -> float:
    """Length of the union of [ts, ts + dur) intervals (overlapping streams count once)."""
    busy, end = 0.0, float("-inf")
    for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
        if stop <= end:
            continue
        busy += stop - max(start, end)
        end = stop
    return busy


def summarize_trace(trace: dict, calls: int, top: int = 25) -> dict[str, Any]:
    """Per-call device figures of a Perfetto trace that holds `calls` calls of one program."""
    events = _device_events(trace)
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        by_name[e["name"]].append(e["dur"])
    ranked = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))
    total = sum(e["dur"] for e in events)
    return dict(
        kernels_per_call=len(events) / calls,
        kernel_us_per_call=total / calls,
        device_busy_us_per_call=_busy_us(events) / calls,
        top_kernels=[dict(name=name[:160], count_per_call=len(durs) / calls, us_per_call=sum(durs) / calls,
                          share=sum(durs) / total if total else 0.0) for name, durs in ranked[:top]])


_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([\w\-]+)\(")   # shape may be a tuple
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]+)"')


def _kernel_key(name: str) -> str:
    return re.sub(r"[.\-]", "_", name)


def describe_kernels(summary: dict[str, Any], hlo_text: str, ops_per_kernel: int = 4) -> dict[str, Any]:
    """Adds to each top kernel that is an XLA fusion its result shape and the JAX ops it fuses (their
    `op_name`s from the compiled HLO text, e.g. `jit(step)/.../gelu`), so a kernel name leads to source."""
    computation, op_names, fusions = None, collections.defaultdict(list), {}
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and "{" in line:          # a computation header
            computation = line.split()[0].lstrip("%") if not line.startswith("ENTRY") else line.split()[1].lstrip("%")
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, shape, opcode = match.groups()
        op = _OP_NAME.search(line)
        if op and op.group(1) not in op_names[computation]:
            op_names[computation].append(op.group(1))
        called = _CALLS.search(line)
        if opcode == "fusion" and called:
            fusions[_kernel_key(name)] = (shape, called.group(1))
    for kernel in summary["top_kernels"]:
        if kernel["name"] in fusions:
            shape, called = fusions[kernel["name"]]
            ops = [o.split("/", 1)[-1] for o in op_names.get(called, [])]
            kernel["hlo"] = f"{shape} " + " | ".join(ops[:ops_per_kernel])
    return summary


def device_summary(call: Callable[[], Any], repeats: int = 5, trace_dir: str | None = None,
                   top: int = 25) -> dict[str, Any]:
    """Runs `call` once to warm up, then `repeats` times under the profiler; see the module docstring."""
    jax.block_until_ready(call())
    trace_dir = trace_dir or tempfile.mkdtemp(prefix="paperclub_trace_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        start = time.perf_counter()
        for _ in range(repeats):
            jax.block_until_ready(call())
        wall = time.perf_counter() - start
    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True),
                   key=os.path.getmtime)
    if not paths:
        raise RuntimeError(f"The profiler wrote no perfetto_trace.json.gz under {trace_dir}.")
    with gzip.open(paths[-1], "rt", encoding="utf-8") as f:
        trace = json.load(f)
    summary = summarize_trace(trace, repeats, top)
    summary["wall_us_per_call"] = wall / repeats * 1e6   # includes the profiler's own overhead
    summary["trace"] = paths[-1]
    return summary
