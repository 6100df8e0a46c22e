"""H200 sweep of kernels_pallas.adaln_block's tiles and warps on LeWM's plan shapes (6 blocks, 300 samples x 3
tokens, width 192, 16 heads x 64, MLP 2048, bf16): us per 6-block stack, against the XLA module path (the six
AdaLNZeroBlocks in bf16 with the modulation given, as LeWM's planner runs them) in the same run. Session 23.

    python benchmarks/results/logs/adaln_block_s23_sweep.py OUT_JSON          # GPU
    python benchmarks/results/logs/adaln_block_s23_sweep.py OUT_JSON smoke    # CPU, interpret mode, tiny
"""
import json
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from core import precision
from core.nn.adaln import AdaLNZeroBlock
from kernels_pallas.adaln_block import kernel, reference

# (samples_per_tile, num_warps, num_stages, NORM_COLUMNS, RESIDUAL_COLUMNS)
CONFIGS = [(16, 4, 2, 128, 64), (8, 4, 2, 128, 64), (4, 4, 2, 128, 64), (16, 8, 2, 128, 64), (8, 8, 2, 128, 64),
           (4, 8, 2, 128, 64), (8, 4, 1, 128, 64), (8, 8, 2, 64, 64), (8, 8, 2, 256, 64), (8, 8, 2, 128, 128),
           (8, 8, 2, 128, 256), (4, 4, 2, 64, 128)]


def _time(fn, *args, repeats):
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(repeats):
        y = fn(*args)
    jax.block_until_ready(y)
    return (time.perf_counter() - t0) / repeats * 1e6


def main(out, smoke=False):
    width, heads, head_dim, mlp, batch = (48, 2, 16, 128, 20) if smoke else (192, 16, 64, 2048, 300)
    interpret, repeats = (True, 1) if smoke else (False, 50)
    blocks = [AdaLNZeroBlock(width, heads, head_dim, mlp, 0.0, nnx.Rngs(i)) for i in range(6)]
    bf16 = lambda t: jax.tree.map(lambda a: a.astype(jnp.bfloat16), t)
    params = [kernel.prepare_params(bf16(reference.block_params(b))) for b in blocks]
    keys = jax.random.split(jax.random.key(0), 7)
    x = jax.random.normal(keys[0], (batch, 3, width), jnp.bfloat16)
    mods = [0.1 * jax.random.normal(k, (batch, 3, 6 * width), jnp.bfloat16) for k in keys[1:]]

    graphdef, state = nnx.split(nnx.List([precision.cast_params(b, jnp.bfloat16) for b in blocks]))

    @jax.jit
    def module_path(state, x, mods):
        for block, m in zip(nnx.merge(graphdef, state), mods):
            x = block(x, None, causal=True, modulation=m)
        return x

    want = module_path(state, x, mods)
    results = {"xla_module": _time(module_path, state, x, mods, repeats=repeats)}
    print("xla module path", results["xla_module"], flush=True)
    for spt, warps, stages, norm_cols, res_cols in CONFIGS:
        kernel.NORM_COLUMNS, kernel.RESIDUAL_COLUMNS = norm_cols, res_cols      # read when a block is traced
        name = f"samples{spt}_warps{warps}_stages{stages}_norm{norm_cols}_res{res_cols}"
        fn = jax.jit(lambda x, m, p, spt=spt, w=warps, s=stages: kernel.adaln_blocks(
            x, m, p, heads=heads, head_dim=head_dim, samples_per_tile=spt, num_warps=w, num_stages=s,
            interpret=interpret))
        try:
            err = float(jnp.max(jnp.abs(fn(x, mods, params).astype(jnp.float32) - want.astype(jnp.float32))))
            results[name] = {"us": _time(fn, x, mods, params, repeats=repeats), "max_abs_diff_vs_module": err}
        except Exception as e:       # a config Triton refuses (shared memory, registers) is reported, not fatal
            results[name] = f"{type(e).__name__}: {str(e)[:160]}"
        print(name, results[name], flush=True)
        if smoke:
            break
    json.dump({"device": jax.devices()[0].device_kind, "shapes": dict(width=width, heads=heads, head_dim=head_dim,
                                                                      mlp=mlp, batch=batch, tokens=3, blocks=6),
               "us_per_6_block_stack": results}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], smoke=len(sys.argv) > 2 and sys.argv[2] == "smoke")
