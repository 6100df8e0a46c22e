"""Tree attention: the Pallas kernel (interpret mode on CPU) equals the jnp reference, which equals
plain causal attention over each root-to-node path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels_pallas.tree_attention import kernel, ops, reference

# A tree of 6 nodes: 0 -> {1, 2}, 1 -> {3}, 2 -> {4, 5}
PARENTS = [-1, 0, 0, 1, 2, 2]


def ancestor_mask(parents):
    n = len(parents)
    mask = np.zeros((n, n), bool)
    for i in range(n):
        j = i
        while j >= 0:
            mask[i, j] = True
            j = parents[j]
    return jnp.asarray(mask)


def random_inputs(key, batch=2, nodes=6, q_heads=4, kv_heads=2, dim=64, slots=128):
    kq, kk, kv = jax.random.split(key, 3)
    q = jax.random.normal(kq, (batch, nodes, q_heads, dim))
    k = jax.random.normal(kk, (batch, slots, kv_heads, dim))
    v = jax.random.normal(kv, (batch, slots, kv_heads, dim))
    lengths = jnp.array([5, 70][:batch], jnp.int32)
    return q, k, v, lengths


def test_reference_equals_attention_along_each_path():
    q, k, v, lengths = random_inputs(jax.random.key(0))
    mask = ancestor_mask(PARENTS)
    out = reference.tree_attention(q, k, v, lengths, mask)
    for b in range(2):
        for node in range(6):
            path = [j for j in range(6) if mask[node, j]]
            slots = list(range(int(lengths[b]))) + [int(lengths[b]) + j for j in path]
            for h in range(4):
                kh = h // 2
                s = (k[b, jnp.array(slots), kh] @ q[b, node, h]) / 8.0
                expected = jax.nn.softmax(s) @ v[b, jnp.array(slots), kh]
                np.testing.assert_allclose(out[b, node, h], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("nodes,parents", [(6, PARENTS), (1, [-1]), (4, [-1, 0, 1, 2])])
@pytest.mark.parametrize("splits", [1, 4])
def test_pallas_kernel_in_interpret_mode_equals_reference(nodes, parents, splits):
    q, k, v, lengths = random_inputs(jax.random.key(1), nodes=nodes)
    mask = ancestor_mask(parents)
    want = reference.tree_attention(q, k, v, lengths, mask)
    got = kernel.tree_attention(q, k, v, lengths, mask, interpret=True, block_k=32, num_splits=splits)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)


def random_tree(nodes: int, seed: int) -> list[int]:
    """Parents of a random tree in level order (each node's parent precedes it), as the engine lays trees out."""
    rng = np.random.default_rng(seed)
    return [-1] + [int(rng.integers(0, i)) for i in range(1, nodes)]


@pytest.mark.parametrize("nodes", [33, 48, 64])
def test_pallas_kernel_takes_trees_up_to_64_nodes(nodes):
    # Nodes 32-63 live in the second bitmask word; a deep chain through both words and a random tree.
    q, k, v, lengths = random_inputs(jax.random.key(4), nodes=nodes, q_heads=2, kv_heads=1, dim=64, slots=192)
    for parents in (random_tree(nodes, nodes), [-1] + list(range(nodes - 1))):
        mask = ancestor_mask(parents)
        want = reference.tree_attention(q, k, v, lengths, mask)
        got = kernel.tree_attention(q, k, v, lengths, mask, interpret=True, block_k=32, num_splits=2)
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    with pytest.raises(ValueError, match="at most 64 nodes"):
        kernel.ancestor_bits(jnp.ones((65, 65), bool))


def test_ops_falls_back_to_reference_on_cpu_and_refuses_bad_shapes():
    q, k, v, lengths = random_inputs(jax.random.key(2))
    mask = ancestor_mask(PARENTS)
    np.testing.assert_allclose(ops.tree_attention(q, k, v, lengths, mask),
                               reference.tree_attention(q, k, v, lengths, mask))
    with pytest.raises(ValueError, match="backend='reference'"):
        ops.tree_attention(q, k[:, :100], v[:, :100], lengths, mask, backend="pallas")


@pytest.mark.gpu
def test_pallas_kernel_on_gpu_equals_reference_bf16():
    q, k, v, lengths = random_inputs(jax.random.key(3), batch=4, nodes=8, q_heads=16, kv_heads=8, dim=64,
                                     slots=2048)
    lengths = jnp.array([1, 500, 1500, 2040], jnp.int32)
    mask = ancestor_mask([-1, 0, 1, 2, 3, 4, 5, 6])
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    want = reference.tree_attention(q, k, v, lengths, mask).astype(jnp.float32)
    got = kernel.tree_attention(q, k, v, lengths, mask).astype(jnp.float32)
    np.testing.assert_allclose(got, want, atol=2e-2, rtol=2e-2)
