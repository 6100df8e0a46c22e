"""jnp reference for kernels_pallas.adaln_block: AdaLNZeroBlock's inference forward with the modulation given."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def block_params(block) -> dict:
    """The arrays of a core.nn.adaln.AdaLNZeroBlock, by name (the kernel's `params`)."""
    return {"norm1_scale": block.norm1.scale[...], "norm1_bias": block.norm1.bias[...],
            "qkv_kernel": block.qkv.kernel[...], "out_kernel": block.out.kernel[...], "out_bias": block.out.bias[...],
            "norm2_scale": block.norm2.scale[...], "norm2_bias": block.norm2.bias[...],
            "fc1_kernel": block.fc1.kernel[...], "fc1_bias": block.fc1.bias[...],
            "fc2_kernel": block.fc2.kernel[...], "fc2_bias": block.fc2.bias[...]}


def _layer_norm(x, eps):
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def adaln_block(x, modulation, params: dict, *, heads: int, head_dim: int, causal: bool = True,
                layout: str = "dit", eps: float = 1e-6):
    """x [B, n, w] -> [B, n, w], computed in f32 from x's and the weights' values."""
    f32 = jnp.float32
    p = {k: v.astype(f32) for k, v in params.items()}
    xf = x.astype(f32)
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(modulation.astype(f32), 6, -1)

    def modulated_norm(x, s, b, shift, scale):
        if layout == "official":
            return _layer_norm(_layer_norm(x, 1e-6) * (1 + scale) + shift, eps) * s + b
        return (_layer_norm(x, eps) * s + b) * (1 + scale) + shift

    batch, n, _ = x.shape
    h = modulated_norm(xf, p["norm1_scale"], p["norm1_bias"], shift1, scale1)
    q, k, v = jnp.split((h @ p["qkv_kernel"]).reshape(batch, n, 3, heads, head_dim), 3, axis=2)
    q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * head_dim ** -0.5
    if causal:
        scores = jnp.where(jnp.tril(jnp.ones((n, n), bool)), scores, -jnp.inf)
    attended = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), v).reshape(batch, n, heads * head_dim)
    xf = xf + gate1 * (attended @ p["out_kernel"] + p["out_bias"])
    h = modulated_norm(xf, p["norm2_scale"], p["norm2_bias"], shift2, scale2)
    h = jax.nn.gelu(h @ p["fc1_kernel"] + p["fc1_bias"], approximate=False)
    return (xf + gate2 * (h @ p["fc2_kernel"] + p["fc2_bias"])).astype(x.dtype)
