"""H200 sweep of kernels_pallas.adaln_block's tiles and warps on LeWM's plan shapes (6 blocks, 300 samples x 3
tokens, width 192, 16 heads x 64, MLP 2048, bf16): us per 6-block stack. Session 23.

    python benchmarks/results/logs/adaln_block_s23_sweep.py OUT_JSON
"""
import json
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from core.nn.adaln import AdaLNZeroBlock
from kernels_pallas.adaln_block import kernel, reference


def main(out):
    blocks = [AdaLNZeroBlock(192, 16, 64, 2048, 0.0, nnx.Rngs(i)) for i in range(6)]
    bf16 = lambda t: jax.tree.map(lambda a: a.astype(jnp.bfloat16), t)
    params = [kernel.prepare_params(bf16(reference.block_params(b))) for b in blocks]
    keys = jax.random.split(jax.random.key(0), 7)
    x = jax.random.normal(keys[0], (300, 3, 192), jnp.bfloat16)
    mods = [0.1 * jax.random.normal(k, (300, 3, 6 * 192), jnp.bfloat16) for k in keys[1:]]
    results = {}
    for spt, warps, stages in [(16, 4, 2), (8, 4, 2), (4, 4, 2), (16, 8, 2), (8, 8, 2), (4, 8, 2), (8, 4, 1)]:
        fn = jax.jit(lambda x, m, p, spt=spt, w=warps, s=stages: kernel.adaln_blocks(
            x, m, p, heads=16, head_dim=64, samples_per_tile=spt, num_warps=w, num_stages=s))
        try:
            jax.block_until_ready(fn(x, mods, params))
            t0 = time.perf_counter()
            for _ in range(50):
                y = fn(x, mods, params)
            jax.block_until_ready(y)
            us = (time.perf_counter() - t0) / 50 * 1e6
        except Exception as e:       # a config Triton refuses (shared memory) is reported, not fatal
            us = f"{type(e).__name__}: {str(e)[:120]}"
        results[f"samples{spt}_warps{warps}_stages{stages}"] = us
        print(spt, warps, stages, us, flush=True)
    json.dump({"device": jax.devices()[0].device_kind, "us_per_6_block_stack": results}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
