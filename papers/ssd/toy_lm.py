"""A tiny context-dependent LM with the KV-cache API of core.nn.transformer, for exact engine tests.

logits(x_i | x_<=i) = A[x_i] + C[(x_0 + ... + x_i + i) mod M]: the next-token distribution depends on the
current token, on the *content* of the whole cached context and on the position, so a cache that keeps a
rejected token, loses an accepted one, or puts a tree node at the wrong position changes the distribution.
The "cache" stores tokens instead of keys/values; everything beyond `lengths` is ignored, as in a real cache.
Exact next-token distributions for any prefix come from `next_logits`, so joints can be enumerated.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    vocab_size: int = 6
    context_mod: int = 5
    scale: float = 1.0
    seed: int = 0
    perturbation: float = 0.0   # a draft: the same tables plus this much Gaussian noise
    perturbation_seed: int = 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ToyCache:
    tokens: jax.Array    # int32[B, S]
    lengths: jax.Array   # int32[B]


class ToyLM(nnx.Module):
    def __init__(self, config: ToyConfig):
        self.config = config
        rng = np.random.default_rng(config.seed)
        noise = np.random.default_rng(config.perturbation_seed)
        shapes = ((config.vocab_size, config.vocab_size), (config.context_mod, config.vocab_size))
        tables = [config.scale * rng.normal(size=s) + config.perturbation * noise.normal(size=s) for s in shapes]
        self.token_logits = nnx.Param(jnp.asarray(tables[0], jnp.float32))
        self.context_logits = nnx.Param(jnp.asarray(tables[1], jnp.float32))

    def logits(self, tokens: jax.Array, context_sums: jax.Array, positions: jax.Array) -> jax.Array:
        index = (context_sums + positions) % self.config.context_mod
        return self.token_logits[...][tokens] + self.context_logits[...][index]


def next_logits(model: ToyLM, sequence: np.ndarray) -> np.ndarray:
    """Exact logits after a full sequence (NumPy, for enumeration)."""
    sequence = np.asarray(sequence)
    return np.asarray(model.logits(jnp.asarray(sequence[-1]), jnp.asarray(sequence.sum()),
                                   jnp.asarray(len(sequence) - 1)))


def init_cache(config: ToyConfig, batch: int, max_len: int, dtype=None) -> ToyCache:
    del config, dtype
    return ToyCache(jnp.zeros((batch, max_len), jnp.int32), jnp.zeros(batch, jnp.int32))


def _prefix_sum(cache: ToyCache) -> jax.Array:
    valid = jnp.arange(cache.tokens.shape[1])[None] < cache.lengths[:, None]
    return jnp.sum(jnp.where(valid, cache.tokens, 0), 1)


def _write(cache: ToyCache, tokens: jax.Array) -> jax.Array:
    slots = cache.lengths[:, None] + jnp.arange(tokens.shape[1])[None]
    return cache.tokens.at[jnp.arange(tokens.shape[0])[:, None], slots].set(tokens, mode="drop")


def prefill(model: ToyLM, tokens: jax.Array, prompt_lengths: jax.Array, cache: ToyCache):
    """Like core.nn.transformer.prefill: the prompt is appended at the current lengths (callers start from an
    empty cache), padding included, then lengths drop the padding."""
    logits, cache = verify(model, tokens, cache)
    return logits, ToyCache(cache.tokens, cache.lengths - tokens.shape[1] + prompt_lengths.astype(jnp.int32))


def verify(model: ToyLM, tokens: jax.Array, cache: ToyCache):
    sums = _prefix_sum(cache)[:, None] + jnp.cumsum(tokens, 1)
    positions = cache.lengths[:, None] + jnp.arange(tokens.shape[1])[None]
    logits = model.logits(tokens, sums, positions)
    return logits, ToyCache(_write(cache, tokens), cache.lengths + tokens.shape[1])


def decode(model: ToyLM, tokens: jax.Array, cache: ToyCache):
    logits, cache = verify(model, tokens[:, None], cache)
    return logits[:, 0], cache


def rollback(cache: ToyCache, new_lengths: jax.Array) -> ToyCache:
    return ToyCache(cache.tokens, new_lengths.astype(jnp.int32))


def verify_tree(model: ToyLM, tokens: jax.Array, depths: jax.Array, ancestor_mask: jax.Array, cache: ToyCache):
    sums = _prefix_sum(cache)[:, None] + tokens @ ancestor_mask.T.astype(tokens.dtype)
    logits = model.logits(tokens, sums, cache.lengths[:, None] + depths[None])
    return logits, ToyCache(_write(cache, tokens), cache.lengths)


def commit_tree_path(cache: ToyCache, node_indices: jax.Array, n_accepted: jax.Array) -> ToyCache:
    rows = jnp.arange(cache.tokens.shape[0])[:, None]
    source = cache.tokens[rows, jnp.minimum(cache.lengths[:, None] + node_indices, cache.tokens.shape[1] - 1)]
    keep = jnp.arange(node_indices.shape[1])[None] < n_accepted[:, None]
    slots = jnp.where(keep, cache.lengths[:, None] + jnp.arange(node_indices.shape[1])[None], cache.tokens.shape[1])
    return ToyCache(cache.tokens.at[rows, slots].set(source, mode="drop"), cache.lengths + n_accepted)
