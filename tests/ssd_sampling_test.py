"""Unit tests of papers/ssd/sampling.py and tree.py: transforms against a NumPy reference, greedy paths,
degenerate cases. Distributional exactness is in ssd_exactness_test.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from papers.ssd import sampling
from papers.ssd import tree as tree_lib


def reference_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Row-by-row NumPy transform: temperature, keep the k largest, then the smallest nucleus >= top_p."""
    out = np.zeros_like(logits, dtype=np.float64)
    for i, row in enumerate(logits.astype(np.float64)):
        z = row / temperature
        if top_k:
            z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        keep = np.zeros(len(p), bool)
        mass = 0.0
        for j in order:
            if mass >= top_p:
                break
            keep[j] = True
            mass += p[j]
        p = np.where(keep, p, 0.0)
        out[i] = p / p.sum()
    return out


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.9),
                                                      (0.5, 8, 0.75), (2.0, 1, 1.0), (1.0, 0, 1e-6)])
def test_sampling_probs_match_numpy_reference(temperature, top_k, top_p):
    logits = np.random.default_rng(0).normal(size=(64, 20)).astype(np.float32) * 2
    got = np.asarray(sampling.sampling_probs(jnp.asarray(logits), temperature, top_k, top_p))
    np.testing.assert_allclose(got, reference_probs(logits, temperature, top_k, top_p), atol=2e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 8, 9])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_top_k_indices_equal_lax_top_k_with_ties(k, dtype):
    # values from a small range, so most rows hold ties, which both must break to the lowest index
    x = jax.random.randint(jax.random.key(k), (6, 5, 40), -4, 4).astype(dtype)
    np.testing.assert_array_equal(sampling.top_k_indices(x, k), jax.lax.top_k(x, k)[1])
    jitted = jax.jit(sampling.top_k_indices, static_argnums=1)
    np.testing.assert_array_equal(jitted(x, k), jax.lax.top_k(x, k)[1])


def test_temperature_zero_is_one_hot_argmax():
    logits = jax.random.normal(jax.random.key(0), (3, 4, 50))
    probs = sampling.sampling_probs(logits, 0.0)
    np.testing.assert_array_equal(np.argmax(probs, -1), np.argmax(logits, -1))
    np.testing.assert_array_equal(np.asarray(probs).sum(-1), 1.0)
    token, _ = sampling.sample_logits(jax.random.key(1), logits, 0.0)
    np.testing.assert_array_equal(token, np.argmax(logits, -1))


def test_invalid_sampling_arguments_raise():
    with pytest.raises(ValueError, match="top_p"):
        sampling.sampling_probs(jnp.zeros((2, 3)), 1.0, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        sampling.sampling_probs(jnp.zeros((2, 3)), -1.0)


def test_sample_never_draws_zero_probability_tokens():
    probs = jnp.asarray([[0.0, 0.5, 0.0, 0.5]] * 5000)
    tokens = np.asarray(sampling.sample(jax.random.key(0), probs))
    assert set(np.unique(tokens)) == {1, 3}


def test_verify_greedy_examples():
    target = jnp.asarray([[3, 1, 4, 1], [3, 1, 4, 1], [3, 1, 4, 1]])  # argmax tokens at K+1 = 4 positions
    draft = jnp.asarray([[3, 1, 4], [3, 2, 4], [0, 1, 4]])
    n, next_token = sampling.verify_greedy(target, draft)
    np.testing.assert_array_equal(n, [3, 1, 0])
    np.testing.assert_array_equal(next_token, [1, 1, 3])


def test_ratio_rule_with_one_hot_probs_is_greedy():
    """At T = 0 the stochastic rule on one-hot distributions must coincide with the argmax path."""
    key = jax.random.key(0)
    logits = jax.random.normal(key, (256, 5, 4))
    draft = jnp.where(jax.random.bernoulli(key, 0.7, (256, 4)), jnp.argmax(logits[:, :4], -1),
                      jax.random.randint(key, (256, 4), 0, 4))
    p = sampling.sampling_probs(logits, 0.0)
    q = jax.nn.one_hot(draft, 4)
    greedy = sampling.verify_greedy(logits, draft)
    for q_or_none in (q, None):
        ratio = sampling.verify_chain(jax.random.key(1), p, q_or_none, draft)
        np.testing.assert_array_equal(ratio[0], greedy[0])
        np.testing.assert_array_equal(ratio[1], greedy[1])


def test_tree_greedy_on_a_chain_equals_chain_greedy():
    key = jax.random.key(2)
    logits = jax.random.normal(key, (128, 4, 3))
    draft = jnp.where(jax.random.bernoulli(key, 0.8, (128, 3)), jnp.argmax(logits[:, :3], -1), 0)
    nodes = jnp.concatenate([jnp.zeros((128, 1), jnp.int32), draft], 1)
    path, n_tree, next_tree = sampling.verify_tree_greedy(logits, nodes, tree_lib.chain(3))
    n, next_token = sampling.verify_greedy(logits, draft)
    np.testing.assert_array_equal(n_tree, n)
    np.testing.assert_array_equal(next_tree, next_token)
    depth = np.arange(3)[None]
    np.testing.assert_array_equal(np.where(depth < np.asarray(n)[:, None], np.asarray(path), 0),
                                  np.where(depth < np.asarray(n)[:, None], depth + 1, 0))


def test_tree_greedy_picks_the_matching_branch():
    tree = tree_lib.tree_from_branching((2, 2))           # nodes: 0; 1 2; 3 4 (under 1), 5 6 (under 2)
    target = jnp.asarray([[7, 0, 9, 0, 0, 0, 5]])         # argmax after each node
    tokens = jnp.asarray([[0, 8, 7, 1, 2, 3, 9]])         # node 2 = 7 matches root, node 6 = 9 matches node 2
    path, n, next_token = sampling.verify_tree_greedy(target, tokens, tree)
    np.testing.assert_array_equal(path, [[2, 6]])
    np.testing.assert_array_equal(n, [2])
    np.testing.assert_array_equal(next_token, [5])


def test_tree_stochastic_with_one_hot_probs_is_greedy():
    tree = tree_lib.tree_from_branching((3, 2))
    key = jax.random.key(3)
    logits = jax.random.normal(key, (200, tree.num_nodes, 4))
    tokens = jax.random.randint(key, (200, tree.num_nodes), 0, 4)
    expected = sampling.verify_tree_greedy(logits, tokens, tree)
    got = sampling.verify_tree(jax.random.key(4), sampling.sampling_probs(logits, 0.0), None, tokens, tree)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_tree_spec_structure():
    tree = tree_lib.tree_from_branching((2, 1))
    assert tree.parents == (-1, 0, 0, 1, 2)
    np.testing.assert_array_equal(tree.depths, [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(tree.children, [[1, 2], [3, -1], [4, -1], [-1, -1], [-1, -1]])
    assert tree.ancestor_mask[4].tolist() == [True, False, True, False, True]
    assert tree.level(2) == (3, 5) and tree.max_depth == 2
    assert tree_lib.chain(3).parents == (-1, 0, 1, 2)
    with pytest.raises(ValueError, match="parents"):
        tree_lib.TreeSpec((-1, 0, 3, 1))
    with pytest.raises(ValueError, match="positive"):
        tree_lib.tree_from_branching((2, 0))
