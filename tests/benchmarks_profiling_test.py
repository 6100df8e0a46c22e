"""benchmarks.profiling: the Perfetto summary counts device kernels per call and the busy time as a union."""
import re

import jax
import jax.numpy as jnp
import pytest

from benchmarks import profiling as profile


def _trace(kernels):
    meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}}]
    host = [{"ph": "X", "pid": 2, "tid": 1, "name": "launch", "ts": 0, "dur": 1000}]
    return {"traceEvents": meta + host + [{"ph": "X", "pid": 1, "tid": 7, "name": n, "ts": t, "dur": d}
                                          for n, t, d in kernels]}


def test_summary_counts_device_kernels_only_and_merges_overlaps():
    # two calls: gemm 10 µs + overlapping fusion on another stream, then a gap, then the same again
    trace = _trace([("gemm", 0, 10), ("fusion", 5, 10), ("gemm", 100, 10), ("fusion", 105, 10)])
    summary = profile.summarize_trace(trace, calls=2)
    assert summary["kernels_per_call"] == 2
    assert summary["kernel_us_per_call"] == 20
    assert summary["device_busy_us_per_call"] == 15          # [0, 15) per call, not 20
    assert [k["name"] for k in summary["top_kernels"]] == ["gemm", "fusion"]
    assert summary["top_kernels"][0]["share"] == pytest.approx(0.5)


def test_device_summary_runs_under_the_real_profiler(tmp_path):
    f = jax.jit(lambda x: jnp.tanh(x @ x).sum())
    x = jnp.ones((64, 64))
    summary = profile.device_summary(lambda: f(x), repeats=2, trace_dir=str(tmp_path))
    assert summary["wall_us_per_call"] > 0
    assert summary["trace"].startswith(str(tmp_path))
    # CPU has no device tracks: the kernel figures are empty rather than made up from host events
    assert summary["kernels_per_call"] == 0 and summary["top_kernels"] == []


def test_describe_kernels_names_the_fused_jax_ops():
    f = jax.jit(lambda x: jnp.tanh(jnp.exp(x) * 3.0).sum())
    hlo = f.lower(jnp.ones((64, 64))).compile().as_text()
    fusion = re.search(r"%([\w.]+) = \S+ fusion\(", hlo).group(1)
    summary = {"top_kernels": [{"name": fusion.replace(".", "_")}, {"name": "not_in_hlo"}]}
    described = profile.describe_kernels(summary, hlo)["top_kernels"]
    assert described[0]["hlo"].startswith("f32[] ")
    assert all(op in described[0]["hlo"] for op in ("exp", "tanh", "reduce_sum"))
    assert "hlo" not in described[1]


def test_describe_kernels_reads_multi_output_fusions():
    hlo = "\n".join([
        "%fused_computation.3 (p: f32[4]) -> (f32[], f32[4]) {",
        '  %e = f32[4]{0} exponential(%p), metadata={op_name="jit(f)/exp"}',
        "}",
        "ENTRY %main (x: f32[4]) -> (f32[], f32[4]) {",
        "  ROOT %input_reduce_fusion.2 = (f32[], f32[4]{0}) fusion(%x), kind=kInput, calls=%fused_computation.3",
        "}"])
    described = profile.describe_kernels({"top_kernels": [{"name": "input_reduce_fusion_2"}]}, hlo)
    assert described["top_kernels"][0]["hlo"] == "(f32[], f32[4]{0}) exp"
