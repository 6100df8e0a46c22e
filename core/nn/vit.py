"""Vision Transformer encoder (pre-norm, learned positions, CLS token), e.g. ViT-tiny/14 at 224 px."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    image_size: int = 224
    patch_size: int = 14
    width: int = 192
    depth: int = 12
    heads: int = 3
    mlp_dim: int = 768
    norm_eps: float = 1e-12   # HF ViT's LayerNorm eps

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def _dense(rngs, din, dout, names=("embed", "mlp")):
    return nnx.Linear(din, dout, rngs=rngs, kernel_init=nnx.with_partitioning(
        nnx.initializers.truncated_normal(0.02), names))


def attention(q, k, v):
    """cuDNN flash attention on GPU for bf16/fp16, else XLA's.

    cuDNN wants sequences in multiples of 64; ViT-tiny/14 at 224 px has 257 tokens (256 patches + CLS), so the
    sequence is zero-padded to 320 and cuDNN masks the padded keys by length. 25% more attention FLOPs, but
    XLA's unfused path materializes f32 scores [B, heads, 257, 257] per layer and is memory-bound.
    """
    fused = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
    if not fused:
        return jax.nn.dot_product_attention(q, k, v)
    batch, length = q.shape[:2]
    padded = -(-length // 64) * 64
    if padded == length:
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    pad = lambda x: jnp.pad(x, ((0, 0), (0, padded - length), (0, 0), (0, 0)))
    lengths = jnp.full((batch,), length, jnp.int32)
    out = jax.nn.dot_product_attention(pad(q), pad(k), pad(v), query_seq_lengths=lengths,
                                       key_value_seq_lengths=lengths, implementation="cudnn")
    return out[:, :length]


class EncoderBlock(nnx.Module):
    def __init__(self, config: ViTConfig, rngs: nnx.Rngs):
        w = config.width
        self.heads = config.heads
        self.norm1 = nnx.LayerNorm(w, epsilon=config.norm_eps, rngs=rngs)
        self.qkv = _dense(rngs, w, 3 * w)
        self.proj = _dense(rngs, w, w, ("mlp", "embed"))
        self.norm2 = nnx.LayerNorm(w, epsilon=config.norm_eps, rngs=rngs)
        self.fc1 = _dense(rngs, w, config.mlp_dim)
        self.fc2 = _dense(rngs, config.mlp_dim, w, ("mlp", "embed"))

    def __call__(self, x):
        b, n, w = x.shape
        q, k, v = jnp.split(self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, w // self.heads), 3, axis=2)
        attended = attention(q[:, :, 0], k[:, :, 0], v[:, :, 0])
        x = x + self.proj(attended.reshape(b, n, w))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))


class ViT(nnx.Module):
    """pixels f32[B, H, W, C] in model units -> CLS features [B, width] after the final LayerNorm."""

    def __init__(self, config: ViTConfig, rngs: nnx.Rngs, channels: int = 3):
        self.config = config
        p, w = config.patch_size, config.width
        self.patch_embed = nnx.Conv(channels, w, (p, p), strides=(p, p), padding="VALID", rngs=rngs)
        self.cls = nnx.Param(jnp.zeros((1, 1, w)), out_sharding=(None, None, "embed"))
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, config.num_patches + 1, w)),
                             out_sharding=(None, None, "embed"))
        self.blocks = nnx.List([EncoderBlock(config, rngs) for _ in range(config.depth)])
        self.norm = nnx.LayerNorm(w, epsilon=config.norm_eps, rngs=rngs)

    def __call__(self, pixels):
        x = self.patch_embed(pixels)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        cls = jnp.broadcast_to(self.cls[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], 1) + self.pos[...].astype(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, 0])
