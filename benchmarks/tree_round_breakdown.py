"""Where a tree-SD round's time goes, by batch size: the pieces of papers/ssd/engine._tree_round timed alone.

Random weights with the shapes of configs/ssd/decode.py (timing does not depend on the values), bf16, a KV
cache holding `--context` tokens. Pieces: one draft tree forward and the top-k of its logits (the round runs
`depth` of each), the target tree forward, greedy tree verification, the two KV-path commits; and one target
AR decode step for scale.

    python -m benchmarks.tree_round_breakdown            # GPU
    python -m benchmarks.tree_round_breakdown --smoke    # CPU check
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks import common
from core import lm as lm_lib, metrics, precision
from core.nn import transformer as tfm
from papers.ssd import engine, pair, sampling, tree as tree_lib


def timed(fn, *args, repeats: int) -> float:
    return 1e3 * common.seconds_per_call(fn, *args, repeats=repeats)


def bf16_model(model_config):
    graphdef, state = nnx.split(tfm.Transformer(model_config, rngs=nnx.Rngs(0)))
    return graphdef, precision.cast_floating(state, jnp.bfloat16)


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    config = common.load_config("ssd/decode", "smoke" if args.smoke else "")
    vocab = 512 if args.smoke else 32768
    target_cfg = lm_lib.model_config(config, vocab)
    draft_cfg = lm_lib.model_config(pair.draft_config(config, config.draft_model), vocab)
    tree = tree_lib.tree_from_branching(tuple(config.decode.tree_branching))
    draft_depths, draft_mask = engine._draft_tree_layout(tree)
    (tg, ts), (dg, ds) = bf16_model(target_cfg), bf16_model(draft_cfg)
    batches = [1, 2] if args.smoke else [int(b) for b in args.batches.split(",")]
    repeats = 2 if args.smoke else args.repeats
    slots = args.context + 64

    def cache_for(model_cfg, batch):
        cache = tfm.init_cache(model_cfg, batch, slots, jnp.bfloat16)
        return tfm.rollback(cache, jnp.full((batch,), args.context, jnp.int32))

    draft_forward = jax.jit(lambda s, tokens, cache: tfm.verify_tree(
        nnx.merge(dg, s), tokens, jnp.asarray(draft_depths), jnp.asarray(draft_mask), cache))
    target_forward = jax.jit(lambda s, tokens, cache: tfm.verify_tree(
        nnx.merge(tg, s), tokens, jnp.asarray(tree.depths), jnp.asarray(tree.ancestor_mask), cache))
    target_step = jax.jit(lambda s, tokens, cache: tfm.decode(nnx.merge(tg, s), tokens, cache))
    verify = jax.jit(lambda logits, nodes: sampling.verify_tree_greedy(logits, nodes, tree))
    commit = jax.jit(tfm.commit_tree_path)
    # T = 0 children: top-k of every node's draft logits, once per level (XLA may lower it to a full sort).
    children = jax.jit(lambda logits: jax.lax.top_k(logits, int(tree.children.shape[1]))[1])
    rows = []
    for batch in batches:
        key = jax.random.key(batch)
        nodes = jax.random.randint(key, (batch, tree.num_nodes), 0, vocab, jnp.int32)
        feed = jnp.concatenate([nodes[:, :1], nodes], 1)
        target_cache, draft_cache = cache_for(target_cfg, batch), cache_for(draft_cfg, batch)
        logits = jax.random.normal(key, (batch, tree.num_nodes, vocab), jnp.float32)
        path = jnp.zeros((batch, tree.max_depth + 1), jnp.int32)
        keep = jnp.full((batch,), 3, jnp.int32)
        row = dict(batch=batch, tree_nodes=tree.num_nodes, depth=tree.max_depth,
                   draft_tree_forward_ms=timed(draft_forward, ds, feed, draft_cache, repeats=repeats),
                   target_tree_forward_ms=timed(target_forward, ts, nodes, target_cache, repeats=repeats),
                   verify_greedy_ms=timed(verify, logits, nodes, repeats=repeats),
                   draft_children_topk_ms=timed(children, jnp.pad(logits, ((0, 0), (0, 1), (0, 0))), repeats=repeats),
                   commit_target_ms=timed(commit, target_cache, path, keep, repeats=repeats),
                   commit_draft_ms=timed(commit, draft_cache, path, keep, repeats=repeats),
                   target_ar_step_ms=timed(target_step, ts, nodes[:, 0], target_cache, repeats=repeats))
        row["round_estimate_ms"] = (tree.max_depth * (row["draft_tree_forward_ms"] + row["draft_children_topk_ms"])
                                    + row["target_tree_forward_ms"]
                                    + row["verify_greedy_ms"] + row["commit_target_ms"] + row["commit_draft_ms"])
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    path = common.result_path(args, "tree_round_breakdown")
    metrics.write_json(path, common.run_info("tree_round_breakdown", args, config=config.to_dict(), rows=rows))
    print("wrote", path)


if __name__ == "__main__":
    main()
