"""GPU micro-benchmark: fused Pallas tree attention vs the XLA (jnp reference) version.

    python -m benchmarks.tree_attention            # GPU
    python -m benchmarks.tree_attention --smoke    # CPU: tiny shapes, the Pallas kernel in interpret mode

Shapes follow the target LM (16 query heads, 8 KV heads, head_dim 64, cache 2048 slots). Reports µs per
call and the share of the streaming bandwidth (measured and spec) for the KV bytes each call must read
(lengths + T slots).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from benchmarks import common
from core import metrics
from kernels_pallas.tree_attention import kernel, reference

SHAPES = ((1, 1, 1024), (1, 8, 1024), (1, 16, 1024), (8, 8, 1024), (32, 8, 1536))   # (batch, nodes, length)
SMOKE_SHAPES = ((1, 4, 40),)


def seconds_in_loop(fn, q, *args, iters: int = 200) -> float:
    """Seconds per call, measured as `iters` dependent calls inside one jitted loop (no host dispatch)."""
    @jax.jit
    def loop(q, *args):
        return jax.lax.fori_loop(0, iters, lambda i, q: q + (1e-3 * fn(q, *args)).astype(q.dtype), q)
    return common.seconds_per_call(loop, q, *args, repeats=1) / iters


def main(argv=None):
    args = common.arg_parser(__doc__).parse_args(argv)
    device = common.measure_device(args.smoke)
    common.print_device(device)
    slots, q_heads, kv_heads, head_dim = (64, 4, 2, 16) if args.smoke else (2048, 16, 8, 64)
    iters = 2 if args.smoke else 200
    rows = []
    for batch, nodes, length in SMOKE_SHAPES if args.smoke else SHAPES:
        key = jax.random.key(0)
        q = jax.random.normal(key, (batch, nodes, q_heads, head_dim), jnp.bfloat16)
        k = jax.random.normal(key, (batch, slots, kv_heads, head_dim), jnp.bfloat16)
        v = jax.random.normal(key, (batch, slots, kv_heads, head_dim), jnp.bfloat16)
        lengths = jnp.full((batch,), length, jnp.int32)
        mask = jnp.tril(jnp.ones((nodes, nodes), bool))
        ref = jax.jit(reference.tree_attention)
        pallas = functools.partial(kernel.tree_attention, interpret=args.smoke)   # interpret: CPU has no Triton
        err = float(jnp.max(jnp.abs(pallas(q, k, v, lengths, mask).astype(jnp.float32)
                                    - ref(q, k, v, lengths, mask).astype(jnp.float32))))
        t_pallas = seconds_in_loop(pallas, q, k, v, lengths, mask, iters=iters)
        t_xla = seconds_in_loop(ref, q, k, v, lengths, mask, iters=iters)
        kv_bytes = 2 * batch * (length + nodes) * kv_heads * head_dim * 2
        rows.append(dict(batch=batch, nodes=nodes, length=length, pallas_us=t_pallas * 1e6, xla_us=t_xla * 1e6,
                         speedup=t_xla / t_pallas, kv_bytes=kv_bytes,
                         pallas_roofline=common.against_device(kv_bytes / t_pallas, device, "bytes"),
                         max_abs_err=err))
    out = common.run_info("tree_attention", args, device=device,
                          config=dict(q_heads=q_heads, kv_heads=kv_heads, head_dim=head_dim, cache_slots=slots,
                                      dtype="bfloat16", loop_iters=iters), rows=rows)
    path = common.result_path(args, "tree_attention")
    metrics.write_json(path, out)
    print(f"{'B':>3} {'T':>3} {'len':>5} {'pallas us':>10} {'xla us':>8} {'x':>5} {'roofline (measured / spec)':>27}")
    for r in rows:
        spec = r["pallas_roofline"]["vs_spec"]
        print(f"{r['batch']:3d} {r['nodes']:3d} {r['length']:5d} {r['pallas_us']:10.1f} {r['xla_us']:8.1f} "
              f"{r['speedup']:5.2f} {r['pallas_roofline']['vs_measured']:12.3f} / {spec if spec is None else f'{spec:.3f}'}")
    print("wrote", path)


if __name__ == "__main__":
    main()
