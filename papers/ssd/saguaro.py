"""Saguaro sampling sigma_{F,C} (SSD paper, Definition 14) and the draw used by every SSD proposal.

sigma_{F,C}(q)_t  is proportional to  C * q_t  for the F most likely tokens of q, and to q_t elsewhere.

Why: after a rejection the bonus token comes from the residual norm(max(0, p - q)); tokens the draft already
likes have little residual mass, so the draft's top-F list (what the speculation cache forks on) predicts the
bonus token poorly. Down-weighting q on its top F (C < 1) moves residual mass onto exactly those tokens: the
cache hits more often, acceptance drops. It stays lossless because the draft token is *sampled* from
sigma(q) and the verifier is handed the same sigma(q) as the proposal distribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from papers.ssd import sampling


def saguaro_probs(probs: jax.Array, fan_out: int, c: float) -> jax.Array:
    """probs [..., V] (already temperature / top-k / top-p transformed) -> sigma_{F,C}(probs), normalised.

    The top F are taken by lax.top_k (ties to the lowest index), exactly F tokens; F = 0 or C = 1 is the
    identity. C must lie in (0, 1]: C = 0 would give all-zero rows when q's mass sits in its top F.
    """
    if not 0.0 < c <= 1.0:
        raise ValueError(f"Saguaro's C must lie in (0, 1], got {c}.")
    if fan_out <= 0 or c == 1.0:
        return probs
    top = jax.lax.top_k(probs, fan_out)[1]
    in_top = jnp.zeros(probs.shape, bool)
    in_top = jnp.any(jax.nn.one_hot(top, probs.shape[-1], dtype=bool), -2) | in_top
    scaled = jnp.where(in_top, c * probs, probs)
    return scaled / scaled.sum(-1, keepdims=True)


def draw(key: jax.Array, logits: jax.Array, fan_out: int, c: float, temperature: float, top_k: int,
         top_p: float) -> tuple[jax.Array, jax.Array | None]:
    """One proposal token per row of logits [..., V] -> (token int32[...], its proposal distribution or None).

    T = 0: the argmax, no distribution (greedy verification needs none). T > 0: the transformed draft
    distribution, then sigma_{F,C}; the token is drawn from exactly the distribution that is returned, which
    the verifier must use as q.
    """
    if temperature == 0.0:
        return jnp.argmax(logits, -1).astype(jnp.int32), None
    probs = saguaro_probs(sampling.sampling_probs(logits, temperature, top_k, top_p), fan_out, c)
    return sampling.sample(key, probs), probs
