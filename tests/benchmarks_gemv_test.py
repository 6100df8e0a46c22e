"""The GEMV benchmark runs on CPU (smoke shapes, both Pallas kernels in interpret mode): every way agrees with
XLA's and the JSON names the fastest per shape."""

import json

from benchmarks import gemv


def test_smoke_sweep_times_every_way_and_names_the_best(tmp_path):
    gemv.main(["--smoke", "--out", str(tmp_path)])
    with open(tmp_path / "gemv_smoke.json") as f:
        result = json.load(f)
    rows = result["rows"]
    assert {r["way"] for r in rows} == {"xla", "xla_rows2", "pallas", "splitk"}
    assert all("error" not in r and r["max_abs_err"] < 0.05 and r["us"] > 0 for r in rows)
    assert set(result["best"]) == {"qkv_b1", "gate_up_b1", "down_b1"}
    for name, best in result["best"].items():
        shape = name.rsplit("_b", 1)[0]
        assert best["us"] == min(r["us"] for r in rows if r["shape"] == shape)
        assert best["splitk_over_xla"] > 0
