"""The tree-attention benchmark runs on CPU (smoke grid, Pallas in interpret mode) and writes the issue's keys."""

import json
import math

from benchmarks import tree_attention


def test_smoke_grid_writes_kernel_speedup_and_rows_that_agree(tmp_path):
    tree_attention.main(["--smoke", "--out", str(tmp_path)])
    with open(tmp_path / "tree_attention_smoke.json") as f:
        result = json.load(f)
    rows = result["rows"]
    assert [(r["nodes"], r["prefix"]) for r in rows] == [(4, 40), (40, 40)]     # 40 nodes: the second mask word
    assert all(r["max_abs_err"] < 0.05 and r["cache_slots"] % 256 == 0 for r in rows)
    spread = result["kernel_speedup"]["vs_reference"]
    assert spread["rows"] == 2 and spread["min"] <= spread["median"] <= spread["max"] and math.isfinite(spread["max"])
    assert result["kernel_speedup"]["vs_cudnn"] is None and "cudnn_us" not in rows[0]   # no cuDNN on the CPU
    assert tree_attention.binary_tree_mask(5).tolist()[4] == [True, True, False, False, True]
