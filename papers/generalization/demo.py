"""Generalisation smoke pipeline for launch/demo.py: a compression bound on sklearn digits (CPU, seconds)."""

from __future__ import annotations

import os


def smoke_pipeline(config, workdir: str) -> list[tuple[str, str]]:
    """`config` is configs/generalization/compression.py:smoke (digits); returns (metric, value) rows."""
    from papers.generalization import compress, data

    config = config.copy_and_resolve_references()
    config.data.tfds_dir = os.path.join(workdir, "tfds", config.data.name)
    result = compress.compress_and_bound(config, data.load_arrays(config.data))
    return [("subspace d / params D", f"{result['dim']} / {result['full_dim']}"),
            ("train / test error (quantised)", f"{result['train_error']:.3f} / {result['test_error']:.3f}"),
            ("code length (bits; entropy of symbols)", f"{result['code_bits']} ({result['entropy_bits']:.0f})"),
            (f"kl error bound, delta={config.bound.delta} (n={result['n']})", f"{result['bound_kl']:.3f}")]
