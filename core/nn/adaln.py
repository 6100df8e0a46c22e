"""AdaLN-zero transformer blocks (DiT): a per-token condition modulates the norms and gates each branch;
the modulation layer starts at zero so every block starts as the identity. Used for LeWM's action-
conditioned predictor; D-MPC's denoisers can reuse them (condition = diffusion time + observation)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; key None (evaluation) is the identity. Keys are passed explicitly: no RNG state."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


SHORT_SEQUENCE = 8


def short_sequence_attention(q: jax.Array, k: jax.Array, v: jax.Array, causal: bool,
                             probs_dropout: float = 0.0, key: jax.Array | None = None) -> jax.Array:
    """Attention over a few tokens ([B, N, heads, d], N <= SHORT_SEQUENCE) as broadcast products and sums.

    XLA's dot-based attention transposes q, k, v to [B, heads, N, d] and runs batched GEMMs that are almost
    empty at N = 3 (LeWM's predictor history); in CEM planning that is 4 transposes + 2 GEMMs per layer per
    call. Written elementwise, XLA fuses scores, softmax and the weighted sum into a couple of loop kernels.
    """
    n = q.shape[1]
    scale = q.shape[-1] ** -0.5
    scores = jnp.sum(q[:, :, None].astype(jnp.float32) * k[:, None].astype(jnp.float32), -1) * scale  # [B,q,k,h]
    if causal:
        allowed = jnp.tril(jnp.ones((n, n), bool))[None, :, :, None]
        scores = jnp.where(allowed, scores, -jnp.inf)
    probs = dropout(jax.nn.softmax(scores, axis=2), probs_dropout, key)
    return jnp.sum(probs[..., None] * v[:, None].astype(jnp.float32), axis=2).astype(q.dtype)


LAYOUTS = ("dit", "official")


def _layer_norm_no_affine(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, -1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), -1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class AdaLNZeroBlock(nnx.Module):
    """`layout` "dit": modulate(LN_affine(x)) before each branch (DiT). "official": LN_affine(modulate(LN(x)))
    with a parameter-free LN first, as LeWM's official predictor block (its Attention / FeedForward open with
    their own affine LayerNorm). Both layouts have the same parameters, so checkpoints load either way.
    `attention_dropout` drops attention probabilities in training (the official code's dropout_p)."""

    def __init__(self, width: int, heads: int, head_dim: int, mlp_dim: int, dropout_rate: float,
                 rngs: nnx.Rngs, layout: str = "dit", attention_dropout: float = 0.0):
        if layout not in LAYOUTS:
            raise ValueError(f"AdaLNZeroBlock layout must be one of {LAYOUTS}, got {layout!r}.")
        self.heads, self.head_dim, self.dropout_rate = heads, head_dim, dropout_rate
        self.layout, self.attention_dropout = layout, attention_dropout
        inner = heads * head_dim
        self.norm1 = nnx.LayerNorm(width, epsilon=1e-6, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * inner, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(inner, width, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, epsilon=1e-6, rngs=rngs)
        self.fc1 = nnx.Linear(width, mlp_dim, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_dim, width, rngs=rngs)
        self.modulation = nnx.Linear(width, 6 * width, rngs=rngs, kernel_init=nnx.initializers.zeros,
                                     bias_init=nnx.initializers.zeros)

    def __call__(self, x, condition, causal: bool = True, key: jax.Array | None = None,
                 modulation: jax.Array | None = None):
        """`modulation` [..., 6 * width]: this block's modulation(silu(condition)) computed by the caller (see
        `stacked_modulations`); `condition` is then unused."""
        if modulation is None:
            modulation = self.modulation(jax.nn.silu(condition))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(modulation, 6, -1)
        keys = jax.random.split(key, 4) if key is not None else (None,) * 4
        b, n, _ = x.shape
        h = self._modulated_norm(self.norm1, x, shift1, scale1)
        q, k, v = jnp.split(self.qkv(h).reshape(b, n, 3, self.heads, self.head_dim), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]
        if n <= SHORT_SEQUENCE:
            attended = short_sequence_attention(q, k, v, causal, self.attention_dropout, keys[3])
        elif self.attention_dropout > 0 and keys[3] is not None:
            raise ValueError(f"attention_dropout is implemented for sequences of at most {SHORT_SEQUENCE} tokens "
                             f"(the predictor's history), got {n}.")
        else:
            attended = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
        x = x + gate1 * dropout(self.out(attended.reshape(b, n, -1)), self.dropout_rate, keys[0])
        h = self._modulated_norm(self.norm2, x, shift2, scale2)
        h = dropout(jax.nn.gelu(self.fc1(h), approximate=False), self.dropout_rate, keys[1])
        return x + gate2 * dropout(self.fc2(h), self.dropout_rate, keys[2])

    def _modulated_norm(self, norm: nnx.LayerNorm, x, shift, scale):
        if self.layout == "official":
            return norm(_layer_norm_no_affine(x) * (1 + scale) + shift)
        return norm(x) * (1 + scale) + shift


def stacked_modulations(blocks, condition: jax.Array) -> list[jax.Array]:
    """Every block's modulation(silu(condition)) from ONE matmul against the blocks' kernels side by side.

    A stack of AdaLN blocks conditioned on the same tokens (LeWM's predictor: the action embedding) would run
    one silu and one GEMM per block; in latency-bound CEM planning (150 predictor calls per plan) each is a
    kernel launch. Concatenating the kernels is loop-invariant, so XLA hoists it out of the planner's loops.
    Same dtype promotion as nnx.Linear (inputs, kernel and bias promoted together)."""
    kernels = jnp.concatenate([b.modulation.kernel[...] for b in blocks], -1)
    biases = jnp.concatenate([b.modulation.bias[...] for b in blocks], -1)
    dtype = jnp.result_type(condition, kernels, biases)
    out = jnp.dot(jax.nn.silu(condition).astype(dtype), kernels.astype(dtype)) + biases.astype(dtype)
    return jnp.split(out, len(blocks), -1)
