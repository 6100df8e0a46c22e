"""Where a tree-SD round's cost grows with the batch, read from the compiled program (no timing).

Compiles ONE round of papers/ssd/engine._tree_round (and, for scale, a chain round) with the decode
benchmark's shapes (configs/ssd/decode.py; abstract bf16 weights, nothing is allocated or run) at each batch
size, and reports XLA's cost analysis (FLOPs, bytes accessed) and counts of the ops whose size can grow with
batch x nodes x vocabulary: sort, TopK custom calls, scatter, gather, copy, while, and the largest
instructions. On a GPU this shows, e.g., whether a top-k became XLA's TopK kernel or a full sort, and
whether whole KV caches are copied inside the round.

With `--profile` each round also runs (random bf16 weights, caches holding `--context` tokens, donated and
rebuilt per call) under benchmarks.profiling: wall and device-busy ms per round and the top kernels, i.e. the
round's cost by kernel at each batch size.

    python -m benchmarks.tree_round_hlo              # the device's compiler (GPU: the real lowering), b = 1, 8, 32
    python -m benchmarks.tree_round_hlo --profile    # GPU: and where each round's time goes, by kernel
    python -m benchmarks.tree_round_hlo --smoke --profile   # CPU, the smoke shapes
"""

from __future__ import annotations

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common
from core import lm as lm_lib, metrics
from core.nn import transformer as tfm
from papers.ssd import engine, pair, tree as tree_lib

_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1, "s64": 8, "u64": 8}


def abstract_model(model_config):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: tfm.Transformer(model_config, rngs=nnx.Rngs(0))))
    cast = lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16 if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype)
    return graphdef, jax.tree.map(cast, state)


def make_loop(configs, decode: engine.DecodeConfig, batch: int, prompt_len: int, context: int) -> engine._Loop:
    """A round's loop state: caches holding `context` tokens per row, every row active."""
    target_cache, draft_cache = engine.init_caches(configs[0], configs[1], decode, batch, prompt_len, jnp.bfloat16)
    lengths = jnp.full((batch,), context, jnp.int32)
    tokens = jnp.arange(batch, dtype=jnp.int32) % configs[0].vocab_size
    zeros = jnp.zeros((batch,), jnp.int32)
    return engine._Loop(tfm.rollback(target_cache, lengths), tfm.rollback(draft_cache, lengths - 1), tokens, tokens,
                        jnp.zeros((batch, decode.max_new_tokens + decode.tokens_per_round), jnp.int32), zeros,
                        jnp.zeros((batch,), bool), zeros, zeros, jnp.int32(0))


def round_program(models, decode: engine.DecodeConfig):
    (tg, _), (dg, _) = models
    round_fn = {"tree": engine._tree_round, "chain": engine._chain_round}[decode.mode]

    def one_round(ts, ds, loop, key):
        return round_fn(tfm, nnx.merge(tg, ts), nnx.merge(dg, ds), loop, key, decode)

    return jax.jit(one_round, donate_argnums=2)


def compile_round(models, configs, decode: engine.DecodeConfig, batch: int, prompt_len: int):
    loop = jax.eval_shape(lambda: make_loop(configs, decode, batch, prompt_len, prompt_len))
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    return round_program(models, decode).lower(models[0][1], models[1][1], loop, key).compile()


def profile_round(program, states, configs, decode, batch: int, prompt_len: int, context: int) -> dict:
    """Wall / device-busy ms per round of the compiled `program` and its top kernels (benchmarks.profiling),
    random bf16 weights."""
    from benchmarks import profiling

    fresh = jax.jit(lambda: make_loop(configs, decode, batch, prompt_len, context))
    key = jax.random.key(0)
    summary = profiling.device_summary(lambda: program(*states, fresh(), key), repeats=5, top=10)
    return dict(wall_ms_per_round=summary["wall_us_per_call"] / 1e3,
                device_busy_ms_per_round=summary["device_busy_us_per_call"] / 1e3,
                kernels_per_round=summary["kernels_per_call"],
                top_kernels=[dict(name=k["name"], ms_per_round=k["us_per_call"] / 1e3, count=k["count_per_call"])
                             for k in summary["top_kernels"]])


def random_states(configs) -> tuple:
    """Random bf16 weights of the target and draft (matrices N(0, 0.02²), norm scales 1), leaf by leaf: one
    small program per distinct shape. The whole model's init as one jitted program took 3 min 37 s to compile
    on the H200 (session 22), more than all the rounds together."""
    normal = jax.jit(lambda key, shape: (0.02 * jax.random.normal(key, shape, jnp.float32)).astype(jnp.bfloat16),
                     static_argnums=1)
    states = []
    for seed, config in enumerate(configs):
        _, abstract = abstract_model(config)
        leaves, treedef = jax.tree.flatten(abstract)
        keys = jax.random.split(jax.random.key(seed), len(leaves))
        make = lambda key, leaf: (jnp.ones(leaf.shape, leaf.dtype) if len(leaf.shape) == 1
                                  else normal(key, tuple(leaf.shape)).astype(leaf.dtype))
        states.append(jax.tree.unflatten(treedef, [make(k, leaf) for k, leaf in zip(keys, leaves)]))
    return tuple(states)


def hlo_summary(compiled, top: int) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    text = compiled.as_text()
    sizes = []
    for line in text.splitlines():
        match = re.match(r"\s*(?:ROOT )?\S+ = (\w+)\[([\d,]*)\]\S* ([\w-]+)\(", line)
        if match and match.group(3) not in ("parameter", "get-tuple-element", "bitcast"):
            count = int(np.prod([int(v) for v in match.group(2).split(",") if v])) if match.group(2) else 1
            sizes.append((count * _BYTES.get(match.group(1), 4), match.group(3), line.strip()[:200]))
    sizes.sort(key=lambda s: -s[0])
    ops = {name: len(re.findall(r"[\]})] " + name + r"\(", text)) for name in ("sort", "scatter", "gather", "copy", "while")}
    ops["topk_custom_call"] = len(re.findall(r'custom_call_target="[^"]*[Tt]op[Kk]', text))
    return dict(gflops=cost.get("flops", 0.0) / 1e9, bytes_accessed_mb=cost.get("bytes accessed", 0.0) / 1e6,
                ops=ops, largest=[dict(mb=b / 1e6, op=op, hlo=line) for b, op, line in sizes[:top]])


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--top", type=int, default=8, help="largest instructions listed per program")
    parser.add_argument("--profile", action="store_true", help="also run each round under the profiler")
    parser.add_argument("--context", type=int, default=128, help="tokens already in the caches (--profile)")
    args = parser.parse_args(argv)
    config = common.load_config("ssd/decode", "smoke" if args.smoke else "")
    vocab = 512 if args.smoke else 32768
    configs = (lm_lib.model_config(config, vocab),
               lm_lib.model_config(pair.draft_config(config, config.draft_model), vocab))
    models = tuple(abstract_model(c) for c in configs)
    dc = config.decode
    tree = tree_lib.tree_from_branching(tuple(dc.tree_branching))
    decodes = {"tree_T0": engine.DecodeConfig("tree", dc.max_new_tokens, tree=tree, tree_children="topk"),
               "tree_T1": engine.DecodeConfig("tree", dc.max_new_tokens, tree=tree, temperature=1.0),
               f"chain_K{dc.ks[0]}_T0": engine.DecodeConfig("chain", dc.max_new_tokens, num_draft=dc.ks[0])}
    states = random_states(configs) if args.profile else None
    rows = []
    for batch in ([1, 2] if args.smoke else [int(b) for b in args.batches.split(",")]):
        for name, decode in decodes.items():
            start = time.perf_counter()
            compiled = compile_round(models, configs, decode, batch, dc.prompt_len)
            row = dict(program=name, batch=batch, compile_s=time.perf_counter() - start, **hlo_summary(compiled, args.top))
            if args.profile:
                row["profile"] = profile_round(compiled, states, configs, decode, batch, dc.prompt_len,
                                               min(args.context, dc.prompt_len + dc.max_new_tokens // 2))
                print(f"    round: {row['profile']['wall_ms_per_round']:.3f} ms wall, "
                      f"{row['profile']['device_busy_ms_per_round']:.3f} ms device busy, "
                      f"{row['profile']['kernels_per_round']:.0f} kernels", flush=True)
            rows.append(row)
            print(f"{name:10s} b={batch:3d} {row['gflops']:9.2f} GFLOP {row['bytes_accessed_mb']:9.1f} MB {row['ops']}",
                  flush=True)
            for big in row["largest"][:3]:
                print(f"    {big['mb']:8.1f} MB {big['op']:12s} {big['hlo'][:110]}")
    path = common.result_path(args, "tree_round_hlo")
    metrics.write_json(path, common.run_info("tree_round_hlo", args, tree_nodes=tree.num_nodes, vocab=vocab,
                                             rows=rows))
    print("wrote", path)


if __name__ == "__main__":
    main()
