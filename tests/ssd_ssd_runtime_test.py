"""SSD runtime (papers/ssd/ssd_runtime.py) on fake CPU devices: greedy SSD equals greedy AR on 1, 2 and 4 devices
(target split over 3), the speculation cache is complete when the fan-out covers the vocabulary, a draft equal
to the target accepts everything, bad settings give one clear error each; Saguaro sampling and the fan-out /
Theorem 7 / b* helpers."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from papers.ssd import engine, fanout, saguaro, ssd, ssd_runtime, ssd_stats, toy_lm

TARGET = toy_lm.ToyConfig(vocab_size=12, context_mod=7, scale=1.5, seed=3)
DRAFT = toy_lm.ToyConfig(vocab_size=12, context_mod=7, scale=1.5, seed=3, perturbation=0.7)
MAX_NEW = 30


@functools.cache
def toy_models():
    return toy_lm.ToyLM(TARGET), toy_lm.ToyLM(DRAFT)


def prompts_batch(batch=12, length=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, TARGET.vocab_size, (batch, length)).astype(np.int32),
            rng.integers(1, length + 1, batch).astype(np.int32))


@functools.cache
def greedy_ar():
    target, _ = toy_models()
    graphdef, state = nnx.split(target)
    config = engine.DecodeConfig("ar", MAX_NEW)
    prompts, lengths = prompts_batch()
    caches = engine.init_caches(TARGET, TARGET, config, *prompts.shape[::-1][::-1], lm=toy_lm)
    result, *_ = engine.make_generate(graphdef, None, config, lm=toy_lm)(
        state, None, *caches, jnp.asarray(prompts), jnp.asarray(lengths), jax.random.key(0))
    return np.asarray(result.tokens)


GREEDY = {   # name: (config, target devices, separate draft device)
    "jit_2dev": (ssd.SSDConfig(num_draft=3, fan_out_hit=(2, 2, 2, 2), max_new_tokens=MAX_NEW), 1, True),
    "fast_target_lookup_4dev": (ssd.SSDConfig(num_draft=3, fan_out_hit=(1, 2, 1, 3), backup="fast",
                                              lookup="target", max_new_tokens=MAX_NEW), 3, True),
    "geometric_miss_vector_1dev": (ssd.SSDConfig(num_draft=4, fan_out_hit=fanout.geometric(4, 8, 0.6, 0.5),
                                                 fan_out_miss=(3, 1, 1, 0, 1), max_new_tokens=MAX_NEW), 1, False),
}


@pytest.mark.parametrize("name", sorted(GREEDY))
def test_greedy_ssd_equals_greedy_ar(name):
    config, num_target, separate = GREEDY[name]
    runtime = ssd_runtime.make_ssd(*toy_models(), config, ssd_runtime.place(num_target, separate), lm=toy_lm)
    result = runtime.generate(*prompts_batch(), jax.random.key(0))
    np.testing.assert_array_equal(result.tokens, greedy_ar())
    np.testing.assert_array_equal(result.num_tokens, MAX_NEW)
    stats = result.stats
    assert stats["rounds_by_source"]["hit"] > 0 and stats["accepted_on_hit"] > 0
    assert 0 < stats["hit_rate"] < 1
    # A second call reuses the handed-back caches and must give the same tokens.
    np.testing.assert_array_equal(runtime.generate(*prompts_batch(), jax.random.key(0)).tokens, greedy_ar())


def test_target_devices_hold_the_batch():
    config = ssd.SSDConfig(num_draft=2, fan_out_hit=(1, 1, 1), max_new_tokens=4)
    placement = ssd_runtime.place(3, True)
    runtime = ssd_runtime.make_ssd(*toy_models(), config, placement, lm=toy_lm)
    tloop, dloop, spec, _ = runtime.start(*prompts_batch(), jax.random.key(0))
    assert tloop.cache.tokens.sharding.device_set == set(placement.target_devices)
    assert dloop.cache.tokens.sharding.device_set == {placement.draft_device}
    assert placement.separate and len(jax.devices()) == 8


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_full_fan_out_always_hits(temperature):
    """Forking on every token but the drafted one covers every possible outcome: hit rate exactly 1."""
    vocab = TARGET.vocab_size
    config = ssd.SSDConfig(num_draft=2, fan_out_hit=(vocab - 1, vocab - 1, vocab), max_new_tokens=MAX_NEW,
                           temperature=temperature)
    result = ssd_runtime.make_ssd(*toy_models(), config, lm=toy_lm).generate(*prompts_batch(), jax.random.key(1))
    assert result.stats["hit_rate"] == 1.0 and result.stats["rounds_by_source"]["miss"] == 0


def test_draft_equal_to_target_accepts_everything():
    target, _ = toy_models()
    config = ssd.SSDConfig(num_draft=3, fan_out_hit=(1, 1, 1, 1), max_new_tokens=MAX_NEW)
    result = ssd_runtime.make_ssd(target, target, config, lm=toy_lm).generate(*prompts_batch(), jax.random.key(0))
    np.testing.assert_array_equal(result.tokens, greedy_ar())
    assert result.stats["acceptance"] == 1.0 and result.stats["hit_rate"] == 1.0


def test_bad_settings_raise_one_clear_error():
    target, draft = toy_models()
    with pytest.raises(ValueError, match="exceeds the vocabulary"):
        ssd_runtime.make_ssd(target, draft, ssd.SSDConfig(num_draft=1, fan_out_hit=(12, 2)), lm=toy_lm)
    other = toy_lm.ToyLM(toy_lm.ToyConfig(vocab_size=10))
    with pytest.raises(ValueError, match="vocabulary .* differs"):
        ssd_runtime.make_ssd(target, other, ssd.SSDConfig(num_draft=1, fan_out_hit=(1, 1)), lm=toy_lm)
    with pytest.raises(ValueError, match="only 8 exist"):
        ssd_runtime.place(8, separate_draft=True)
    with pytest.raises(ValueError, match="num_draft \\+ 1"):
        ssd.SSDConfig(num_draft=2, fan_out_hit=(1, 1))
    with pytest.raises(ValueError, match="lookup='draft'"):
        ssd.SSDConfig(num_draft=1, fan_out_hit=(1, 1), backup="jit", lookup="target")
    runtime = ssd_runtime.make_ssd(target, draft, ssd.SSDConfig(num_draft=1, fan_out_hit=(1, 1)), ssd_runtime.place(3), lm=toy_lm)
    with pytest.raises(ValueError, match="multiple of the 3 target devices"):
        runtime.generate(*prompts_batch(batch=4), jax.random.key(0))


def test_transformer_greedy_ssd_equals_ar():
    from core.nn import transformer as tfm

    shape = dict(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=256)
    target = tfm.Transformer(tfm.TransformerConfig(n_layers=2, **shape), rngs=nnx.Rngs(0))
    draft = tfm.Transformer(tfm.TransformerConfig(n_layers=1, **shape), rngs=nnx.Rngs(1))
    prompts = np.random.default_rng(0).integers(0, 64, (4, 8)).astype(np.int32)
    lengths = np.asarray([8, 1, 3, 5], np.int32)
    config = engine.DecodeConfig("ar", 16)
    (tg, ts) = nnx.split(target)
    caches = engine.init_caches(target.config, None, config, 4, 8, jnp.float32)
    ar, *_ = engine.make_generate(tg, None, config)(ts, None, *caches, jnp.asarray(prompts), jnp.asarray(lengths),
                                                     jax.random.key(0))
    runtime = ssd_runtime.make_ssd(target, draft, ssd.SSDConfig(num_draft=3, fan_out_hit=(2, 2, 2, 2), max_new_tokens=16),
                           ssd_runtime.place(1, True), cache_dtype=jnp.float32)
    result = runtime.generate(prompts, lengths, jax.random.key(0))
    np.testing.assert_array_equal(result.tokens, np.asarray(ar.tokens))
    pieces = ssd_stats.time_pieces(runtime, prompts, lengths, jax.random.key(0), num_rounds=3)
    assert all(v > 0 for v in pieces.values()), pieces


# ----------------------------------------------------------------------------------------------------------
# Saguaro sampling and the analytic helpers.

def test_saguaro_scales_exactly_the_top_f():
    probs = jnp.asarray([[0.4, 0.3, 0.2, 0.1]])
    out = np.asarray(saguaro.saguaro_probs(probs, 2, 0.5))
    expected = np.asarray([0.2, 0.15, 0.2, 0.1]) / 0.65
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(saguaro.saguaro_probs(probs, 2, 1.0), probs)
    with pytest.raises(ValueError, match="C must lie"):
        saguaro.saguaro_probs(probs, 2, 0.0)


def test_fan_out_vectors():
    assert fanout.uniform(3, 2) == (2, 2, 2, 2)
    geometric = fanout.geometric(5, 20, 0.7, 0.6)
    assert sum(geometric) == 20 and len(geometric) == 6
    assert list(geometric[:-1]) == sorted(geometric[:-1], reverse=True)   # shallow outcomes are likelier
    assert geometric[-1] >= geometric[-2]                                 # "all accepted" carries a^K
    weights = fanout.geometric_weights(3, 0.5, 1.0)
    np.testing.assert_allclose(weights, [1, 0.5 ** 0.5, 0.5, 0.5 ** 1.5 * 0.5 ** -0.5])


def test_power_law_fit_recovers_r():
    f = np.asarray([1, 2, 3, 4, 6, 8])
    assert abs(fanout.fit_power_law(f, 1 - f ** -0.7) - 0.7) < 1e-9


def test_theorem7_and_crossover_batch():
    # Primary = backup and p_hit = 0 is plain SD: E / (1 + T).
    assert math.isclose(fanout.theorem7_speedup(0.0, 3.0, 2.5, 0.4, 0.4), 2.5 / 1.4)
    p, e_hit, e_jit, e_fast, t_p, t_b = 0.9, 3.0, 3.0, 0.5, 0.5, 0.6
    b_star = fanout.crossover_batch(p, e_hit, e_jit, e_fast, t_p, t_b)
    speed_jit = lambda b: (p * e_hit + (1 - p) * e_jit) / (p ** b + (1 - p ** b) * (1 + t_b))
    speed_fast = p * e_hit + (1 - p) * e_fast
    assert 1 < b_star < 64
    assert speed_jit(math.floor(b_star)) > speed_fast > speed_jit(math.ceil(b_star))
    assert fanout.crossover_batch(0.8, 3.0, 2.5, 1.0, 0.5, 0.0) == math.inf   # a free backup never loses


def test_neural_fallback_drafts_only_missed_rows():
    """Rows that hit keep their cached speculation; missed rows get exactly the neural draft of their context."""
    _, draft = toy_models()
    config = ssd.SSDConfig(num_draft=2, fan_out_hit=(1, 1, 1), max_new_tokens=8)
    batch = 12
    prompts, lengths = prompts_batch(batch)
    cache = toy_lm.prefill(draft, jnp.asarray(prompts), jnp.asarray(lengths),
                           toy_lm.init_cache(DRAFT, batch, 32))[1]
    need = jnp.asarray(np.arange(batch) % 5 == 1)            # 3 of 12 rows missed: the batch / 4 bucket
    bonus = jnp.asarray(np.arange(batch) % TARGET.vocab_size, jnp.int32)
    cached = jnp.full((batch, 2), -1, jnp.int32)
    tokens, _ = ssd._neural_fallback(toy_lm, draft, cache, need, bonus, cached, None, jax.random.key(0), config)
    full, _, _ = ssd.chain_draft(toy_lm, draft, cache, bonus, jax.random.key(0), (1, 1, 1), config)
    np.testing.assert_array_equal(np.asarray(tokens)[~np.asarray(need)], -1)
    np.testing.assert_array_equal(np.asarray(tokens)[np.asarray(need)], np.asarray(full)[np.asarray(need)])
    assert ssd.fallback_buckets(12) == (2, 3, 6, 12) and ssd.fallback_buckets(1) == (1,)
