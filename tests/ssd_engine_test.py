"""The decode engine on papers.ssd.toy_lm (a context-dependent LM with the KV-cache API): greedy chain and
tree SD are token-identical to greedy AR, AR matches a from-scratch reference, stop tokens and lengths are
respected, and stochastic chain/tree SD through the caches reproduce the exact joint of the first three
tokens (G-test, as in ssd_exactness_test.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from papers.ssd import engine, toy_lm
from papers.ssd import tree as tree_lib
from tests.tests_support import exact_joint as _exact_joint, joint_g_test

TARGET = toy_lm.ToyConfig(vocab_size=12, context_mod=7, scale=1.5, seed=3)
DRAFT = toy_lm.ToyConfig(vocab_size=12, context_mod=7, scale=1.5, seed=3, perturbation=0.7)


@functools.cache
def models():
    target, draft = toy_lm.ToyLM(TARGET), toy_lm.ToyLM(DRAFT)
    return nnx.split(target), nnx.split(draft), target


def run(config: engine.DecodeConfig, prompts, prompt_lengths, seed=0):
    (tg, ts), (dg, ds), _ = models()
    generate = engine.make_generate(tg, None if config.mode == "ar" else dg, config, lm=toy_lm)
    caches = engine.init_caches(TARGET, DRAFT, config, prompts.shape[0], prompts.shape[1], lm=toy_lm)
    result, *_ = generate(ts, ds, *caches, jnp.asarray(prompts), jnp.asarray(prompt_lengths), jax.random.key(seed))
    return jax.tree.map(np.asarray, result)


def prompts_batch(batch=12, length=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, TARGET.vocab_size, (batch, length)).astype(np.int32), \
        rng.integers(1, length + 1, batch).astype(np.int32)


def reference_greedy(prompt, max_new):
    target = models()[2]
    sequence = list(prompt)
    for _ in range(max_new):
        sequence.append(int(np.argmax(toy_lm.next_logits(target, np.asarray(sequence)))))
    return np.asarray(sequence[len(prompt):])


MAX_NEW = 40
GREEDY_CONFIGS = {
    "chain_K1": engine.DecodeConfig("chain", MAX_NEW, num_draft=1),
    "chain_K4": engine.DecodeConfig("chain", MAX_NEW, num_draft=4),
    "tree_221_topk": engine.DecodeConfig("tree", MAX_NEW, tree=tree_lib.tree_from_branching((2, 2, 1)),
                                          tree_children="topk"),
    "tree_chain5": engine.DecodeConfig("tree", MAX_NEW, tree=tree_lib.chain(5), tree_children="topk"),
}


def test_greedy_ar_matches_reference():
    prompts, lengths = prompts_batch()
    result = run(engine.DecodeConfig("ar", MAX_NEW), prompts, lengths)
    assert (result.num_tokens == MAX_NEW).all()
    for row in range(3):
        np.testing.assert_array_equal(result.tokens[row], reference_greedy(prompts[row, :lengths[row]], MAX_NEW))
    assert len({tuple(r) for r in result.tokens}) > 3  # the toy is not degenerate


@pytest.mark.parametrize("name", sorted(GREEDY_CONFIGS))
def test_greedy_speculative_equals_greedy_ar(name):
    prompts, lengths = prompts_batch()
    expected = run(engine.DecodeConfig("ar", MAX_NEW), prompts, lengths)
    result = run(GREEDY_CONFIGS[name], prompts, lengths)
    np.testing.assert_array_equal(result.tokens, expected.tokens)
    np.testing.assert_array_equal(result.num_tokens, MAX_NEW)
    # Each round emits accepted + 1 tokens; the first token comes from the prefill.
    assert ((result.num_tokens - 1 <= result.rounds + result.accepted)).all()
    assert result.accepted.sum() > 0


def test_stop_tokens_and_lengths():
    prompts, lengths = prompts_batch()
    free = run(engine.DecodeConfig("ar", MAX_NEW), prompts, lengths)
    stop = int(free.tokens[0, 5])
    for config in (engine.DecodeConfig("ar", MAX_NEW, stop_tokens=(stop,)),
                   engine.DecodeConfig("chain", MAX_NEW, num_draft=3, stop_tokens=(stop,)),
                   engine.DecodeConfig("tree", MAX_NEW, tree=tree_lib.tree_from_branching((2, 2)),
                                       tree_children="topk", stop_tokens=(stop,))):
        result = run(config, prompts, lengths)
        for row in range(len(prompts)):
            hits = np.flatnonzero(free.tokens[row] == stop)
            expected_len = hits[0] + 1 if hits.size else MAX_NEW
            assert result.num_tokens[row] == expected_len, (config.mode, row)
            np.testing.assert_array_equal(result.tokens[row, :expected_len], free.tokens[row, :expected_len])


@pytest.mark.parametrize("mode", ["ar", "chain", "tree"])
def test_caches_handed_back_are_reusable(mode):
    """generate donates its caches and returns them; a second call on them must not see the first's state."""
    config = engine.DecodeConfig(mode, 12, num_draft=3, tree=tree_lib.tree_from_branching((2, 1)),
                                 tree_children="topk")
    (tg, ts), (dg, ds), _ = models()
    generate = engine.make_generate(tg, None if mode == "ar" else dg, config, lm=toy_lm)
    prompts, lengths = prompts_batch()
    caches = engine.init_caches(TARGET, DRAFT, config, prompts.shape[0], prompts.shape[1], lm=toy_lm)
    first, *caches = generate(ts, ds, *caches, jnp.asarray(prompts), jnp.asarray(lengths), jax.random.key(0))
    first = jax.tree.map(np.asarray, first)
    second, *_ = generate(ts, ds, *caches, jnp.asarray(prompts), jnp.asarray(lengths), jax.random.key(0))
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="mode"):
        engine.DecodeConfig("beam")
    with pytest.raises(ValueError, match="TreeSpec"):
        engine.DecodeConfig("tree")


@pytest.mark.parametrize("config", [engine.DecodeConfig("chain", MAX_NEW, num_draft=4),
                                    engine.DecodeConfig("tree", MAX_NEW, tree=tree_lib.tree_from_branching((2, 1, 1)),
                                                        tree_children="topk"),
                                    engine.DecodeConfig("chain", 16, num_draft=3, temperature=1.0)],
                         ids=["chain_greedy", "tree_greedy", "chain_T1"])
def test_draft_equal_to_target_accepts_everything(config):
    """Checks the draft-side cache bookkeeping, which greedy equality cannot see (it only costs acceptance)."""
    (tg, ts), _, _ = models()
    generate = engine.make_generate(tg, tg, config, lm=toy_lm)
    prompts, lengths = prompts_batch()
    caches = engine.init_caches(TARGET, TARGET, config, prompts.shape[0], prompts.shape[1], lm=toy_lm)
    result, *_ = generate(ts, ts, *caches, jnp.asarray(prompts), jnp.asarray(lengths), jax.random.key(0))
    per_round = config.tokens_per_round
    expected_rounds = -(-(config.max_new_tokens - 1) // per_round)
    np.testing.assert_array_equal(result.rounds, expected_rounds)
    np.testing.assert_array_equal(result.accepted, expected_rounds * (per_round - 1))


# ----------------------------------------------------------------------------------------------------------
# Stochastic exactness through the caches.

SMALL_TARGET = toy_lm.ToyConfig(vocab_size=6, context_mod=5, scale=1.0, seed=7)
SMALL_DRAFT = toy_lm.ToyConfig(vocab_size=6, context_mod=5, scale=1.0, seed=7, perturbation=0.8)
NUM_RUNS = 100_000
STOCHASTIC_CASES = {
    "chain_K3_T1": (engine.DecodeConfig("chain", 3, num_draft=3, temperature=1.0), (2, 5)),
    "chain_K2_T07_topk4_topp09": (engine.DecodeConfig("chain", 3, num_draft=2, temperature=0.7, top_k=4,
                                                      top_p=0.9), (1,)),
    "tree_221_sample_T1": (engine.DecodeConfig("tree", 3, tree=tree_lib.tree_from_branching((2, 2, 1)),
                                               temperature=1.0), (4, 0, 3)),
    "tree_31_topk_T08": (engine.DecodeConfig("tree", 3, tree=tree_lib.tree_from_branching((3, 1)),
                                             tree_children="topk", temperature=0.8), (5, 5)),
}
ALPHA = 1e-3 / len(STOCHASTIC_CASES)


def exact_joint(model, prompt, config: engine.DecodeConfig) -> np.ndarray:
    return _exact_joint(model, prompt, config, toy_lm)


@pytest.mark.parametrize("name", sorted(STOCHASTIC_CASES))
def test_stochastic_speculative_decoding_matches_exact_joint(name):
    config, prompt = STOCHASTIC_CASES[name]
    target, draft = toy_lm.ToyLM(SMALL_TARGET), toy_lm.ToyLM(SMALL_DRAFT)
    (tg, ts), (dg, ds) = nnx.split(target), nnx.split(draft)
    generate = engine.make_generate(tg, dg, config, lm=toy_lm)
    prompts = np.tile(np.asarray(prompt, np.int32), (NUM_RUNS, 1))
    caches = engine.init_caches(SMALL_TARGET, SMALL_DRAFT, config, NUM_RUNS, len(prompt), lm=toy_lm)
    result, *_ = generate(ts, ds, *caches, jnp.asarray(prompts), jnp.full(NUM_RUNS, len(prompt), jnp.int32),
                          jax.random.key(11))
    tokens = np.asarray(result.tokens)
    assert (np.asarray(result.num_tokens) == 3).all()
    pvalue, g = joint_g_test(tokens, exact_joint(target, prompt, config), SMALL_TARGET.vocab_size)
    assert pvalue > ALPHA, f"{name}: G={g:.1f} p={pvalue:.2e}"
    assert np.asarray(result.accepted).mean() > 0.3  # the draft is used, not bypassed


# ----------------------------------------------------------------------------------------------------------
# The same engine on the real transformer (small random weights, f32 on CPU).

def small_transformers(vocab=64):
    from core.nn import transformer as tfm

    shape = dict(vocab_size=vocab, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=256)
    target_cfg = tfm.TransformerConfig(n_layers=2, **shape)
    draft_cfg = tfm.TransformerConfig(n_layers=1, **shape)
    return (target_cfg, tfm.Transformer(target_cfg, rngs=nnx.Rngs(0)),
            draft_cfg, tfm.Transformer(draft_cfg, rngs=nnx.Rngs(1)))


def run_transformers(config, prompts, lengths, self_draft=False, seed=0, vocab=64):
    target_cfg, target, draft_cfg, draft = small_transformers(vocab)
    if self_draft:
        draft_cfg, draft = target_cfg, target
    (tg, ts), (dg, ds) = nnx.split(target), nnx.split(draft)
    generate = engine.make_generate(tg, None if config.mode == "ar" else dg, config)
    caches = engine.init_caches(target_cfg, draft_cfg, config, prompts.shape[0], prompts.shape[1], jnp.float32)
    result, *_ = generate(ts, ds, *caches, jnp.asarray(prompts), jnp.asarray(lengths), jax.random.key(seed))
    return jax.tree.map(np.asarray, result), target


TRANSFORMER_PROMPTS = np.random.default_rng(0).integers(0, 64, (6, 8)).astype(np.int32)
TRANSFORMER_LENGTHS = np.asarray([8, 1, 3, 5, 8, 2], np.int32)


@functools.cache
def transformer_greedy_ar():
    return run_transformers(engine.DecodeConfig("ar", 20), TRANSFORMER_PROMPTS, TRANSFORMER_LENGTHS)


def test_transformer_ar_matches_full_forward():
    ar, target = transformer_greedy_ar()
    graphdef, state = nnx.split(target)
    forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens))
    prompts, lengths = TRANSFORMER_PROMPTS, TRANSFORMER_LENGTHS
    for row in (0, 1):  # a cache-free full forward (causal, so right padding is harmless)
        sequence = np.zeros((1, 28), np.int32)
        sequence[0, :lengths[row]] = prompts[row, :lengths[row]]
        for i in range(lengths[row], lengths[row] + 20):
            sequence[0, i] = int(jnp.argmax(forward(state, jnp.asarray(sequence))[0, i - 1]))
        np.testing.assert_array_equal(ar.tokens[row], sequence[0, lengths[row]:lengths[row] + 20])


@pytest.mark.parametrize("config", [engine.DecodeConfig("chain", 20, num_draft=3),
                                    engine.DecodeConfig("tree", 20, tree=tree_lib.tree_from_branching((2, 2, 1)),
                                                        tree_children="topk")], ids=["chain", "tree"])
def test_transformer_greedy_speculative_equals_ar(config):
    result, _ = run_transformers(config, TRANSFORMER_PROMPTS, TRANSFORMER_LENGTHS)
    np.testing.assert_array_equal(result.tokens, transformer_greedy_ar()[0].tokens)
    assert result.accepted.sum() > 0


def test_transformer_self_draft_accepts_everything():
    result, _ = run_transformers(engine.DecodeConfig("chain", 20, num_draft=3), TRANSFORMER_PROMPTS,
                                 TRANSFORMER_LENGTHS, self_draft=True)
    np.testing.assert_array_equal(result.tokens, transformer_greedy_ar()[0].tokens)
    np.testing.assert_array_equal(result.accepted, 15)  # 19 tokens after the prefill: 5 rounds of 3 + 1
