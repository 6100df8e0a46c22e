"""GPU micro-benchmark: fused Pallas tree attention vs the unfused jnp reference and cuDNN.

    python -m benchmarks.tree_attention            # GPU: the issue's grid (prefix 128-8192, trees 8-64, batch 1-32)
    python -m benchmarks.tree_attention --prefixes 2048 --nodes 8,64 --batches 1,32    # a subset
    python -m benchmarks.tree_attention --smoke    # CPU: tiny shapes, the Pallas kernel in interpret mode

Shapes follow the target LM (16 query heads, 8 KV heads, head_dim 64); the cache holds the prefix and the tree,
rounded up to 256 slots. Three ways to compute the same tree-masked attention of T nodes over the cache:
  pallas     kernels_pallas/tree_attention (reads each KV byte once, stops at the prefix + tree),
  reference  the unfused jnp version (scores over the whole cache, masked softmax),
  cudnn      jax.nn.dot_product_attention(implementation="cudnn") with the tree visibility as its boolean mask,
             the kernel a JAX user would otherwise pick (GPU only; an error is recorded where cuDNN refuses).
Each is timed as 200 dependent calls inside one jitted loop (no host dispatch). `kernel_speedup` summarises
Pallas over the reference and over cuDNN across the grid (min / median / max); each row also gives the Pallas
kernel's share of the streaming bandwidth (measured and spec) for the KV bytes it must read (prefix + T slots).
"""

from __future__ import annotations

import functools
import statistics

import jax
import jax.numpy as jnp

from benchmarks import common
from core import metrics
from kernels_pallas.tree_attention import kernel, reference
from papers.ssd import tree as tree_lib

PREFIXES, NODES, BATCHES = (128, 512, 2048, 8192), (8, 16, 32, 64), (1, 8, 32)
SMOKE_GRID = dict(prefixes=(40,), nodes=(4, 40), batches=(1,))


def seconds_in_loop(fn, q, *args, iters: int = 200) -> float:
    """Seconds per call, measured as `iters` dependent calls inside one jitted loop (no host dispatch)."""
    @jax.jit
    def loop(q, *args):
        return jax.lax.fori_loop(0, iters, lambda i, q: q + (1e-3 * fn(q, *args)).astype(q.dtype), q)
    return common.seconds_per_call(loop, q, *args, repeats=1) / iters


def binary_tree_mask(nodes: int) -> jax.Array:
    """Ancestor mask of a binary tree in level order (node i's parent is (i - 1) // 2), the shape of a drafted
    tree; the kernels' cost does not depend on its shape."""
    return jnp.asarray(tree_lib.TreeSpec((-1,) + tuple((i - 1) // 2 for i in range(1, nodes))).ancestor_mask)


def cudnn_attention(q, k, v, lengths, ancestor_mask):
    """The same attention through jax.nn.dot_product_attention's cuDNN path, visibility as a boolean mask."""
    mask = reference.visibility(lengths, ancestor_mask, k.shape[1])[:, None]      # [B, 1, T, S]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")


def _spread(values: list[float]) -> dict | None:
    return dict(min=min(values), median=statistics.median(values), max=max(values), rows=len(values)) \
        if values else None


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--prefixes", default=",".join(map(str, PREFIXES)), help="committed prefix lengths")
    parser.add_argument("--nodes", default=",".join(map(str, NODES)), help=f"tree sizes (<= {kernel.MAX_TREE_NODES})")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes")
    args = parser.parse_args(argv)
    grid = SMOKE_GRID if args.smoke else dict(prefixes=_ints(args.prefixes), nodes=_ints(args.nodes),
                                              batches=_ints(args.batches))
    if max(grid["nodes"]) > kernel.MAX_TREE_NODES:
        raise SystemExit(f"--nodes: the kernel takes at most {kernel.MAX_TREE_NODES} tree nodes.")
    device = common.measure_device(args.smoke)
    common.print_device(device)
    q_heads, kv_heads, head_dim = (4, 2, 64) if args.smoke else (16, 8, 64)
    iters = 2 if args.smoke else 200
    on_gpu = jax.default_backend() == "gpu"
    ref = jax.jit(reference.tree_attention)
    pallas = jax.jit(functools.partial(kernel.tree_attention, interpret=not on_gpu))
    fused = jax.jit(cudnn_attention)
    rows = []
    for batch in grid["batches"]:
        for prefix in grid["prefixes"]:
            for nodes in grid["nodes"]:
                slots = -(-(prefix + nodes) // 256) * 256
                key = jax.random.key(0)
                q = jax.random.normal(key, (batch, nodes, q_heads, head_dim), jnp.bfloat16)
                k = jax.random.normal(jax.random.fold_in(key, 1), (batch, slots, kv_heads, head_dim), jnp.bfloat16)
                v = jax.random.normal(jax.random.fold_in(key, 2), (batch, slots, kv_heads, head_dim), jnp.bfloat16)
                lengths = jnp.full((batch,), prefix, jnp.int32)
                mask = binary_tree_mask(nodes)
                want = ref(q, k, v, lengths, mask).astype(jnp.float32)
                err = float(jnp.max(jnp.abs(pallas(q, k, v, lengths, mask).astype(jnp.float32) - want)))
                t_pallas = seconds_in_loop(pallas, q, k, v, lengths, mask, iters=iters)
                t_ref = seconds_in_loop(ref, q, k, v, lengths, mask, iters=iters)
                row = dict(batch=batch, nodes=nodes, prefix=prefix, cache_slots=slots, pallas_us=t_pallas * 1e6,
                           reference_us=t_ref * 1e6, speedup_vs_reference=t_ref / t_pallas, max_abs_err=err)
                if on_gpu:
                    try:
                        row["cudnn_err"] = float(jnp.max(jnp.abs(fused(q, k, v, lengths, mask).astype(jnp.float32)
                                                                 - want)))
                        t_cudnn = seconds_in_loop(fused, q, k, v, lengths, mask, iters=iters)
                        row.update(cudnn_us=t_cudnn * 1e6, speedup_vs_cudnn=t_cudnn / t_pallas)
                    except Exception as error:     # cuDNN refuses some shapes / masks: recorded, not fatal
                        row["cudnn_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                kv_bytes = 2 * batch * (prefix + nodes) * kv_heads * head_dim * 2
                row.update(kv_bytes=kv_bytes, pallas_roofline=common.against_device(kv_bytes / t_pallas, device,
                                                                                   "bytes"))
                rows.append(row)
                print(f"B={batch:2d} T={nodes:2d} prefix={prefix:5d}: pallas {row['pallas_us']:8.1f} us, "
                      f"reference {row['reference_us']:8.1f} us ({row['speedup_vs_reference']:.2f}x), cudnn "
                      + (f"{row['cudnn_us']:8.1f} us ({row['speedup_vs_cudnn']:.2f}x)" if "cudnn_us" in row
                         else row.get("cudnn_error", "n/a (CPU)")), flush=True)
    speedup = dict(vs_reference=_spread([r["speedup_vs_reference"] for r in rows]),
                   vs_cudnn=_spread([r["speedup_vs_cudnn"] for r in rows if "speedup_vs_cudnn" in r]),
                   note="Pallas time over the other's, per grid row; > 1 means the Pallas kernel is faster")
    out = common.run_info("tree_attention", args, device=device,
                          config=dict(q_heads=q_heads, kv_heads=kv_heads, head_dim=head_dim, dtype="bfloat16",
                                      loop_iters=iters, grid=grid, cudnn=on_gpu),
                          kernel_speedup=speedup, rows=rows)
    path = common.result_path(args, "tree_attention")
    metrics.write_json(path, out)
    print("kernel_speedup:", speedup)
    print("wrote", path)


if __name__ == "__main__":
    main()
