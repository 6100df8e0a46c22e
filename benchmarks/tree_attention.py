"""GPU micro-benchmark: fused Pallas tree attention vs the XLA (jnp reference) version.

    python benchmarks/tree_attention.py

Shapes follow the target LM (16 query heads, 8 KV heads, head_dim 64, cache 2048 slots). Reports µs per
call and the share of the HBM roofline for the KV bytes each call must read (lengths+T slots).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp

from core import metrics
from kernels_pallas.tree_attention import kernel, reference

HBM_BYTES_PER_S = 2.9e12


def timeit(fn, q, *args, iters=200):
    """Seconds per call, measured as `iters` dependent calls inside one jitted loop (no host dispatch)."""
    @jax.jit
    def loop(q, *args):
        return jax.lax.fori_loop(0, iters, lambda i, q: q + (1e-3 * fn(q, *args)).astype(q.dtype), q)
    jax.block_until_ready(loop(q, *args))
    t0 = time.perf_counter()
    jax.block_until_ready(loop(q, *args))
    return (time.perf_counter() - t0) / iters


def main():
    rows = []
    for batch, nodes, length in ((1, 1, 1024), (1, 8, 1024), (1, 16, 1024), (8, 8, 1024), (32, 8, 1536)):
        key = jax.random.key(0)
        q = jax.random.normal(key, (batch, nodes, 16, 64), jnp.bfloat16)
        k = jax.random.normal(key, (batch, 2048, 8, 64), jnp.bfloat16)
        v = jax.random.normal(key, (batch, 2048, 8, 64), jnp.bfloat16)
        lengths = jnp.full((batch,), length, jnp.int32)
        mask = jnp.tril(jnp.ones((nodes, nodes), bool))
        ref = jax.jit(reference.tree_attention)
        err = float(jnp.max(jnp.abs(kernel.tree_attention(q, k, v, lengths, mask).astype(jnp.float32)
                                    - ref(q, k, v, lengths, mask).astype(jnp.float32))))
        t_pallas = timeit(kernel.tree_attention, q, k, v, lengths, mask)
        t_xla = timeit(ref, q, k, v, lengths, mask)
        kv_bytes = 2 * batch * (length + nodes) * 8 * 64 * 2
        rows.append(dict(batch=batch, nodes=nodes, length=length, pallas_us=t_pallas * 1e6, xla_us=t_xla * 1e6,
                         speedup=t_xla / t_pallas, pallas_roofline=kv_bytes / HBM_BYTES_PER_S / t_pallas,
                         max_abs_err=err))
        print(rows[-1], flush=True)
    out = metrics.run_info("tree_attention", config=dict(q_heads=16, kv_heads=8, head_dim=64, cache_slots=2048, dtype="bfloat16"),
               hbm_bytes_per_s=HBM_BYTES_PER_S, rows=rows)
    path = os.path.join(os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"), "tree_attention.json")
    metrics.write_json(path, out)
    print(f"{'B':>3} {'T':>3} {'len':>5} {'pallas us':>10} {'xla us':>8} {'x':>5} {'roofline':>8}")
    for r in rows:
        print(f"{r['batch']:3d} {r['nodes']:3d} {r['length']:5d} {r['pallas_us']:10.1f} {r['xla_us']:8.1f} "
              f"{r['speedup']:5.2f} {r['pallas_roofline']:8.3f}")


if __name__ == "__main__":
    main()
