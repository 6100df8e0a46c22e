"""benchmarks.common: device measurement on CPU at tiny sizes, spec lookup, result naming, the JSON header,
and the compile guard."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common
from core import metrics


def test_bandwidth_and_matmul_are_positive_and_finite_on_cpu():
    bandwidth = common.measure_bandwidth(1 << 20, repeats=2)
    flops = common.measure_matmul(64, repeats=2)
    assert np.isfinite(bandwidth) and 1e6 < bandwidth < 1e14      # bytes/s: above 1 MB/s, below 100 TB/s
    assert np.isfinite(flops) and 1e5 < flops < 1e16


def test_measure_device_labels_smoke_and_has_no_spec_for_cpu():
    device = common.measure_device(smoke=True)
    assert device["name"] == jax.devices()[0].device_kind
    assert device["spec_bytes_per_s"] is None and device["spec_bf16_flops"] is None
    assert "smoke" in device["measurement"]["label"]
    share = common.against_device(0.5 * device["measured_bytes_per_s"], device, "bytes")
    assert share["vs_measured"] == pytest.approx(0.5) and share["vs_spec"] is None


def test_spec_table_tells_h200_from_h100_sxm_and_pcie():
    assert common.device_spec("NVIDIA H200")["spec_bytes_per_s"] == 4.8e12
    assert common.device_spec("NVIDIA H100 80GB HBM3")["spec_bytes_per_s"] == 3.35e12
    assert common.device_spec("NVIDIA H100 PCIe")["spec_bytes_per_s"] == 2.0e12
    h200 = dict(name="NVIDIA H200", measured_bf16_flops=800e12, **common.device_spec("NVIDIA H200"))
    share = common.against_device(400e12, h200, "flops")
    assert share["vs_measured"] == pytest.approx(0.5) and share["vs_spec"] == pytest.approx(400 / 989)


def test_smoke_results_get_their_own_file(tmp_path):
    args = common.arg_parser("Doc line.\n\nMore.").parse_args(["--smoke", "--out", str(tmp_path)])
    assert common.result_path(args, "decode") == str(tmp_path / "decode_smoke.json")
    assert common.result_path(args, "train_lm", "png").endswith("train_lm_smoke.png")
    full = common.arg_parser("Doc.").parse_args([])
    assert common.result_path(full, "decode") == "benchmarks/results/decode.json"


def test_header_keys_and_atomic_json(tmp_path):
    args = common.arg_parser("Doc.").parse_args(["--smoke"])
    path = tmp_path / "r.json"
    metrics.write_json(str(path), common.run_info("unit", args, config=dict(a=1), value=np.float32(0.5)))
    result = json.loads(path.read_text())
    assert {"benchmark", "date", "device_kind", "versions", "command", "args", "config"} <= set(result)
    assert set(result["versions"]) >= {"jax", "flax"} and result["args"]["smoke"] is True
    assert result["value"] == 0.5 and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_load_config_reads_a_variant():
    assert common.load_config("ssd/decode", "smoke").data.seq_len == 64


def test_compile_counter_counts_backend_compiles_only():
    double = jax.jit(lambda x: x * 2)
    a, b = np.ones(3, np.float32), np.ones(4, np.float32)
    with common.CompileCounter() as counter:
        double(a), double(a), double(b)
    assert counter.count == 2


def test_compile_counter_counts_a_program_loaded_from_the_persistent_cache(tmp_path):
    # two processes on one cache directory (as the test job and a GPU session's consecutive commands run):
    # the second compiles nothing but loads the programs, and the guard must still see each one
    import os
    import subprocess
    import sys
    script = ("from benchmarks import common; import jax, jax.numpy as jnp\n"
              "hits = []\n"
              "jax.monitoring.register_event_listener(lambda e, **k: hits.append(e == '/jax/compilation_cache/cache_hits'))\n"
              "with common.CompileCounter() as c:\n"
              "    jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()\n"
              "print(c.count, sum(hits))")
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_path),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONPATH=common.ROOT)
    env.pop("XLA_FLAGS", None)
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                           cwd=common.ROOT).stdout.split()[-2:] for _ in range(2)]
    (compiled, hits_first), (loaded, hits_second) = [(int(a), int(b)) for a, b in runs]
    assert compiled >= 1 and hits_first == 0 and os.listdir(tmp_path)
    assert hits_second == compiled and loaded == compiled     # every program came from disk, and each counted


def test_timing_refuses_a_call_that_compiles_while_timed():
    shapes = iter(range(1, 100))
    fresh_shape = lambda: jnp.ones(next(shapes)).sum()    # a new shape, so a new compile, every call
    with pytest.raises(RuntimeError, match="compilation"):
        common.seconds_per_call(fresh_shape, repeats=2)
    assert common.seconds_per_call(jax.jit(lambda x: x + 1), jnp.ones(4), repeats=2) > 0
