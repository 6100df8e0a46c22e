"""SSD smoke pipeline for launch/demo.py: a trained smoke target, a distilled smaller draft, and greedy AR vs
chain / tree speculative decoding on held-out prompts (token-identical outputs, acceptance, tokens/round)."""

from __future__ import annotations

import os

import numpy as np

DRAFT = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, mlp_dim=64)


def smoke_pipeline(workdir: str) -> list[tuple[str, str]]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from core import config as config_lib, lm, train
    from core.data import lm_pipeline, tokenizer as tokenizer_lib
    from core.nn import transformer as tfm
    from papers.ssd import engine, tree

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    corpus_dir = os.path.join(workdir, "corpus")
    base = config_lib.load_config(os.path.join(root, "configs", "lm", "smoke.py"))
    target_config = config_lib.apply_overrides(base, {"data.corpus_dir": corpus_dir, "train.num_steps": 150,
                                                      "optim.total_steps": 150, "train.eval_every": 150})
    target_run = lm.train_lm(target_config, os.path.join(workdir, "target"))
    target = train.merge_model(target_run.graphdef, target_run.state)

    # The draft: a 1-layer model distilled from the target on the same corpus.
    draft_config = config_lib.apply_overrides(target_config, {f"model.{k}": v for k, v in DRAFT.items()})
    vocab = tokenizer_lib.load_tokenizer(corpus_dir).get_vocab_size()
    draft_model = tfm.Transformer(lm.model_config(draft_config, vocab), rngs=nnx.Rngs(1))
    batches = lm_pipeline.make_lm_iterator(corpus_dir, "train", draft_config.data.seq_len,
                                           draft_config.data.batch_size, seed=1)
    draft_run = train.train(draft_config, os.path.join(workdir, "draft"), draft_model,
                            lm.distillation_loss(target, hard_weight=0.5), batches)

    val = next(lm_pipeline.make_lm_iterator(corpus_dir, "validation", 16, 8, seed=0, num_epochs=1))
    prompts = jnp.asarray(val["tokens"][:, :16])
    lengths = jnp.full((prompts.shape[0],), 16, jnp.int32)
    target_graphdef, target_state = nnx.split(train.merge_model(target_run.graphdef, target_run.state, jnp.bfloat16))
    draft_graphdef, draft_state = nnx.split(train.merge_model(draft_run.graphdef, draft_run.state, jnp.bfloat16))
    t_cfg, d_cfg = lm.model_config(target_config, vocab), lm.model_config(draft_config, vocab)
    outputs, rows = {}, []
    modes = {"ar": engine.DecodeConfig(mode="ar", max_new_tokens=32),
             "chain": engine.DecodeConfig(mode="chain", num_draft=4, max_new_tokens=32),
             "tree": engine.DecodeConfig(mode="tree", tree=tree.tree_from_branching([2, 2, 1]), max_new_tokens=32)}
    for name, decode_config in modes.items():
        generate = engine.make_generate(target_graphdef, None if name == "ar" else draft_graphdef, decode_config)
        caches = engine.init_caches(t_cfg, d_cfg, decode_config, prompts.shape[0], 16)
        result, *_ = generate(target_state, None if name == "ar" else draft_state, *caches, prompts, lengths,
                              jax.random.key(0))
        outputs[name] = np.asarray(result.tokens)
        if name != "ar":
            rounds, accepted = np.asarray(result.rounds).sum(), np.asarray(result.accepted).sum()
            identical = np.mean([np.array_equal(a, b) for a, b in zip(outputs["ar"], outputs[name])])
            rows.append((f"greedy {name} SD: identical to AR / tokens per target forward",
                         f"{identical:.0%} / {(accepted + rounds) / rounds:.2f}"))
    return rows
