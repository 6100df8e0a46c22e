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
    attention_pad_multiple: int | None = 64   # cuDNN attention: pad 257 tokens to a multiple of this
    pad_tokens_once: bool = False   # pad the token sequence once before the blocks, not q, k, v in every layer

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def _dense(rngs, din, dout, names=("embed", "mlp")):
    return nnx.Linear(din, dout, rngs=rngs, kernel_init=nnx.with_partitioning(
        nnx.initializers.truncated_normal(0.02), names))


def attention(q, k, v, pad_multiple: int | None = 64, valid_length: int | None = None):
    """cuDNN flash attention on GPU for bf16/fp16, else XLA's.

    ViT-tiny/14 at 224 px has 257 tokens (256 patches + CLS), a length cuDNN refuses; the sequence is
    zero-padded to a multiple of `pad_multiple` (None: not padded) and the padded keys are masked by length.
    `valid_length`: the sequence arrives already padded and only its first `valid_length` tokens are real.
    XLA's unfused path materializes f32 scores [B, heads, 257, 257] per layer and is memory-bound.
    `benchmarks/vit_encoder.py` measures the padding choices.
    """
    batch, length = q.shape[:2]
    fused = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
    if valid_length is not None and valid_length < length:
        lengths = jnp.full((batch,), valid_length, jnp.int32)
        return jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                            implementation="cudnn" if fused else None)
    if not fused:
        return jax.nn.dot_product_attention(q, k, v)
    padded = -(-length // pad_multiple) * pad_multiple if pad_multiple else length
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
        self.pad_multiple = config.attention_pad_multiple
        self.norm1 = nnx.LayerNorm(w, epsilon=config.norm_eps, rngs=rngs)
        self.qkv = _dense(rngs, w, 3 * w)
        self.proj = _dense(rngs, w, w, ("mlp", "embed"))
        self.norm2 = nnx.LayerNorm(w, epsilon=config.norm_eps, rngs=rngs)
        self.fc1 = _dense(rngs, w, config.mlp_dim)
        self.fc2 = _dense(rngs, config.mlp_dim, w, ("mlp", "embed"))

    def __call__(self, x, valid_length: int | None = None):
        b, n, w = x.shape
        q, k, v = jnp.split(self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, w // self.heads), 3, axis=2)
        attended = attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], self.pad_multiple, valid_length)
        x = x + self.proj(attended.reshape(b, n, w))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))


class ViT(nnx.Module):
    """pixels f32[B, H, W, C] in model units -> CLS features [B, width] after the final LayerNorm."""

    def __init__(self, config: ViTConfig, rngs: nnx.Rngs, channels: int = 3):
        self.config = config
        p, w = config.patch_size, config.width
        # cuDNN's conv, not a GEMM on patchified pixels: faster alone (benchmarks/vit_encoder.py) but then
        # XLA lays the encoder's activations out frames-minor and the whole train step got 13% slower.
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
        length, multiple = x.shape[1], self.config.attention_pad_multiple
        valid_length = None
        if self.config.pad_tokens_once and multiple and length % multiple:
            # padded tokens ride along every block; attention masks them as keys, and only CLS is read out
            x = jnp.pad(x, ((0, 0), (0, -length % multiple), (0, 0)))
            valid_length = length
        for block in self.blocks:
            x = block(x, valid_length)
        return self.norm(x[:, 0])
