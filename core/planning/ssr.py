"""Sample, Score, Rank (D-MPC's planner): draw candidates from a proposal, score them, keep the best.

`sample_fn(key, num_samples) -> candidates` (any pytree with a leading sample axis, e.g. actions and the
states a dynamics model predicts for them), `score_fn(candidates) -> scores[N]` (higher is better). One pure
function: jit it, vmap it over episodes, scan it over time.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def sample_score_rank(sample_fn: Callable[[jax.Array, int], Any], score_fn: Callable[[Any], jax.Array],
                      key: jax.Array, num_samples: int) -> tuple[Any, dict]:
    """Returns the highest-scoring candidate and info {scores[N], best_index}."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
    candidates = sample_fn(key, num_samples)
    scores = score_fn(candidates)
    best = jnp.argmax(scores)
    return jax.tree.map(lambda x: x[best], candidates), {"scores": scores, "best_index": best}


def softmax_weighted(candidates: Any, scores: jax.Array, temperature: float) -> Any:
    """MPPI / MBOP-Trajopt aggregation: the exp(score / temperature)-weighted mean of the candidates."""
    weights = jax.nn.softmax((scores - scores.max()) / temperature)
    return jax.tree.map(lambda x: jnp.tensordot(weights, x, axes=1), candidates)
