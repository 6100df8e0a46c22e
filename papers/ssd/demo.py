"""SSD smoke pipeline for launch/demo.py: a trained smoke target, a distilled smaller draft (papers.ssd.pair),
and greedy AR vs chain / tree speculative decoding on held-out prompts (token-identical outputs, tokens per
target forward)."""

from __future__ import annotations

import os

import numpy as np

DRAFT = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, mlp_dim=64)


def smoke_pipeline(config, workdir: str) -> list[tuple[str, str]]:
    """`config`: an SSD decode config at smoke size (configs/ssd/decode.py:smoke); its corpus goes to workdir."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from core import config as config_lib
    from core.data import lm_pipeline
    from core.precision import cast_floating
    from papers.ssd import engine, pair, tree

    target_config = config_lib.apply_overrides(config, {"data.corpus_dir": os.path.join(workdir, "corpus")})
    draft_config = pair.draft_config(target_config, DRAFT)
    target, draft = pair.train_pair(target_config, draft_config, workdir)

    prompt_len, new = 16, 32
    val = next(lm_pipeline.make_lm_iterator(target_config.data.corpus_dir, "validation", prompt_len, 8, seed=0,
                                            num_epochs=1))
    prompts = jnp.asarray(val["tokens"][:, :prompt_len])
    lengths = jnp.full((prompts.shape[0],), prompt_len, jnp.int32)
    (tg, ts), (dg, ds) = ((g, cast_floating(s, jnp.bfloat16)) for g, s in (nnx.split(target), nnx.split(draft)))
    outputs, rows = {}, []
    modes = {"ar": engine.DecodeConfig(mode="ar", max_new_tokens=new),
             "chain": engine.DecodeConfig(mode="chain", num_draft=4, max_new_tokens=new),
             "tree": engine.DecodeConfig(mode="tree", tree=tree.tree_from_branching([2, 2, 1]), max_new_tokens=new)}
    for name, decode_config in modes.items():
        speculative = name != "ar"
        generate = engine.make_generate(tg, dg if speculative else None, decode_config)
        caches = engine.init_caches(target.config, draft.config, decode_config, prompts.shape[0], prompt_len)
        result, *_ = generate(ts, ds if speculative else None, *caches, prompts, lengths, jax.random.key(0))
        outputs[name] = np.asarray(result.tokens)
        if speculative:
            rounds, accepted = np.asarray(result.rounds).sum(), np.asarray(result.accepted).sum()
            identical = np.mean([np.array_equal(a, b) for a, b in zip(outputs["ar"], outputs[name])])
            rows.append((f"greedy {name} SD: identical to AR / tokens per target forward",
                         f"{identical:.0%} / {(accepted + rounds) / rounds:.2f}"))
    return rows
