"""The transformer's cached entry points agree with its plain causal forward."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core import sharding as sharding_lib
from core.nn import transformer as tfm
from core.nn.decode import decode_step, inference_params

CONFIG = tfm.TransformerConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                               mlp_dim=48, max_seq_len=64, tie_embeddings=False)
TOL = dict(atol=2e-4, rtol=2e-4)


@pytest.fixture(scope="module")
def model():
    return tfm.Transformer(CONFIG, rngs=nnx.Rngs(0))


def tokens(shape, seed=0):
    return jax.random.randint(jax.random.key(seed), shape, 0, CONFIG.vocab_size)


def test_param_count_matches_the_module(model):
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == tfm.param_count(CONFIG)
    tied = tfm.TransformerConfig(**{**CONFIG.__dict__, "tie_embeddings": True})
    assert tfm.param_count(tied) == sum(x.size for x in jax.tree.leaves(
        nnx.state(tfm.Transformer(tied, rngs=nnx.Rngs(0)), nnx.Param)))


def test_prefill_then_decode_equals_full_forward(model):
    seq = tokens((2, 12))
    full = model(seq)
    cache = tfm.init_cache(CONFIG, 2, 64, jnp.float32)
    logits, cache = tfm.prefill(model, seq[:, :5], jnp.array([5, 5]), cache)
    chex.assert_trees_all_close(logits, full[:, :5], **TOL)
    decode = jax.jit(tfm.decode, donate_argnums=2)
    for i in range(5, 12):
        step_logits, cache = decode(model, seq[:, i], cache)
        chex.assert_trees_all_close(step_logits, full[:, i], **TOL)
    assert cache.lengths.tolist() == [12, 12]


def test_verify_equals_sequential_decodes_and_rollback_is_a_length(model):
    seq = tokens((2, 10), seed=1)
    full = model(seq)
    cache = tfm.init_cache(CONFIG, 2, 64, jnp.float32)
    _, cache = tfm.prefill(model, seq[:, :4], jnp.array([4, 4]), cache)
    wrong = tokens((2, 6), seed=7)
    _, cache = tfm.verify(model, wrong, cache)          # a rejected draft...
    cache = tfm.rollback(cache, jnp.array([4, 4]))      # ...is undone by a length
    logits, cache = tfm.verify(model, seq[:, 4:], cache)
    chex.assert_trees_all_close(logits, full[:, 4:], **TOL)


def test_right_padded_prompts_of_different_lengths(model):
    seq = tokens((2, 9), seed=2)
    full = [model(seq[b:b + 1, :n]) for b, n in ((0, 9), (1, 4))]
    padded = seq.at[1, 4:].set(0)
    cache = tfm.init_cache(CONFIG, 2, 64, jnp.float32)
    logits, cache = tfm.prefill(model, padded, jnp.array([9, 4]), cache)
    chex.assert_trees_all_close(logits[0], full[0][0], **TOL)
    chex.assert_trees_all_close(logits[1, :4], full[1][0], **TOL)
    nxt = tokens((2,), seed=3)
    step, _ = tfm.decode(model, nxt, cache)
    chex.assert_trees_all_close(step[1], model(jnp.concatenate([seq[1:2, :4], nxt[1:2, None]], 1))[0, -1], **TOL)


# Tree: 0 -> {1, 2}; 1 -> {3}; 2 -> {4}
PARENTS = [-1, 0, 0, 1, 2]


def _tree():
    mask = np.zeros((5, 5), bool)
    depths = np.zeros(5, np.int32)
    for i, p in enumerate(PARENTS):
        j = i
        while j >= 0:
            mask[i, j] = True
            depths[i] += j != i
            j = PARENTS[j]
    return jnp.asarray(depths), jnp.asarray(mask)


def test_verify_tree_equals_each_branch_and_commit_moves_the_path(model):
    prefix = tokens((1, 6), seed=4)
    nodes = tokens((1, 5), seed=5)
    depths, mask = _tree()
    cache = tfm.init_cache(CONFIG, 1, 64, jnp.float32)
    _, cache = tfm.prefill(model, prefix, jnp.array([6]), cache)
    logits, tree_cache = tfm.verify_tree(model, nodes, depths, mask, cache)
    assert tree_cache.lengths.tolist() == [6]
    for leaf, path in ((3, [0, 1, 3]), (4, [0, 2, 4])):
        branch = jnp.concatenate([prefix, nodes[:, jnp.array(path)]], 1)
        full = model(branch)
        for depth, node in enumerate(path):
            chex.assert_trees_all_close(logits[0, node], full[0, 6 + depth], **TOL)
    # Accept path 0 -> 2 -> 4, then continue decoding: equals the plain forward of the branch.
    committed = tfm.commit_tree_path(tree_cache, jnp.array([[0, 2, 4]]), jnp.array([3]))
    assert committed.lengths.tolist() == [9]
    nxt = tokens((1,), seed=6)
    step, _ = tfm.decode(model, nxt, committed)
    branch = jnp.concatenate([prefix, nodes[:, jnp.array([0, 2, 4])], nxt[:, None]], 1)
    chex.assert_trees_all_close(step[0], model(branch)[0, -1], **TOL)


def test_sharded_forward_equals_unsharded(model):
    seq = tokens((8, 16), seed=8)
    want = model(seq)
    mesh = sharding_lib.make_mesh(dict(data=2, fsdp=2, tensor=2))
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, sharding_lib.state_shardings(state, mesh))
    sharded_seq = sharding_lib.shard_batch(np.asarray(seq), mesh)
    got = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, sharded_seq)
    chex.assert_trees_all_close(got, want, **TOL)


def test_bad_config_is_one_clear_error():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        tfm.TransformerConfig(vocab_size=8, d_model=8, n_layers=1, n_heads=3, n_kv_heads=2, head_dim=4, mlp_dim=8)


@pytest.mark.parametrize("tied", [False, True])
def test_decode_step_with_fused_inference_params_equals_decode(tied):
    config = tfm.TransformerConfig(**{**CONFIG.__dict__, "tie_embeddings": tied})
    model = tfm.Transformer(config, rngs=nnx.Rngs(3))
    seq = tokens((2, 9), seed=3)
    prompt_lengths = jnp.array([4, 6])
    _, cache = tfm.prefill(model, seq[:, :6], prompt_lengths, tfm.init_cache(config, 2, 64, jnp.float32))
    params = inference_params(model, jnp.float32)
    step = jax.jit(decode_step, static_argnums=1, donate_argnums=3)
    slow_cache = jax.tree.map(jnp.copy, cache)
    for i in range(3):
        fast_logits, cache = step(params, config, seq[:, 6 + i], cache)
        slow_logits, slow_cache = tfm.decode(model, seq[:, 6 + i], slow_cache)
        chex.assert_trees_all_close(fast_logits, slow_logits, **TOL)
    chex.assert_trees_all_close(cache, slow_cache, **TOL)
    assert cache.lengths.tolist() == [7, 9]
    bf16 = inference_params(model)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(bf16))
