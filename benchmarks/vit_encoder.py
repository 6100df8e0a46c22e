"""GPU benchmark: the pieces of LeWM's ViT-tiny/14 encoder step (512 frames at 224 px, bf16, fwd + bwd).

    python benchmarks/vit_encoder.py [--out $OUT]

Three tables from one run: attention at 257 tokens (XLA vs cuDNN with the sequence padded to a multiple
of 64, of 8, or not at all); the patch embedding alone as cuDNN's stride-14 conv vs one GEMM on
patchified pixels (the ViT keeps the conv, see core/nn/vit.py); the whole encoder for each attention
padding, with q, k, v padded in every layer or the token sequence padded once before the blocks (`_once`).
Time per fwd+bwd call.
"""

from __future__ import annotations

import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_FRAMES = flags.DEFINE_integer("frames", 512, "Frames per step (batch 128 × 4 frames).")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per row.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes (CPU check of the script).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Output directory.")


def patchify(pixels, patch: int):
    """[B, H, W, C] -> [B, patches, p·p·C] in the order of a [p, p, C, width] conv kernel."""
    b, h, w, c = pixels.shape
    x = pixels.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


PADDINGS = {"cudnn_pad64": 64, "cudnn_pad8": 8, "cudnn_unpadded": None}


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from core import metrics, precision, train
    from core.nn import vit

    frames, size = (4, 28) if _SMOKE.value else (_FRAMES.value, 224)
    config = vit.ViTConfig(image_size=size)
    tokens = config.num_patches + 1
    ms = lambda fn, *args: 1e3 * metrics.seconds_per_call(fn, *args, repeats=_REPEATS.value)
    grad_of = lambda f: jax.jit(jax.grad(lambda *a: f(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
    result = metrics.run_info("vit_encoder", frames=frames, image_size=size, tokens=tokens,
                              attention_ms={}, patch_embedding_ms={}, encoder_ms={})

    q, k, v = (jax.random.normal(jax.random.key(i), (frames, tokens, config.heads, config.width // config.heads),
                                 jnp.bfloat16) for i in range(3))
    variants = {"xla": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")}
    variants.update({name: functools.partial(vit.attention, pad_multiple=m) for name, m in PADDINGS.items()})
    for name, fn in variants.items():
        try:
            result["attention_ms"][name] = ms(grad_of(fn), q, k, v)
        except Exception as error:          # cuDNN refuses some shapes; the table says so
            result["attention_ms"][name] = f"unsupported: {type(error).__name__}: {str(error)[:200]}"

    pixels = jax.random.normal(jax.random.key(3), (frames, size, size, 3), jnp.bfloat16)
    kernel = jax.random.normal(jax.random.key(4), (14, 14, 3, config.width), jnp.bfloat16)
    conv = lambda w, x: jax.lax.conv_general_dilated(x, w, (14, 14), "VALID",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    gemm = lambda w, x: patchify(x, 14) @ w.reshape(-1, w.shape[-1])
    for name, fn in (("conv", conv), ("patchify_gemm", gemm)):
        step = jax.jit(jax.grad(lambda w, x, fn=fn: fn(w, x).astype(jnp.float32).sum()))
        result["patch_embedding_ms"][name] = ms(step, kernel, pixels)

    encoders = {name: dict(attention_pad_multiple=m) for name, m in PADDINGS.items()}
    encoders.update({f"{name}_once": dict(attention_pad_multiple=m, pad_tokens_once=True)
                     for name, m in PADDINGS.items() if m})
    for name, options in encoders.items():
        model = vit.ViT(vit.ViTConfig(image_size=size, **options), nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        params = precision.cast_floating(params, jnp.bfloat16)
        step = jax.jit(jax.grad(lambda p, x: nnx.merge(graphdef, p)(x).astype(jnp.float32).sum()))
        try:
            result["encoder_ms"][name] = ms(step, params, pixels)
        except Exception as error:
            result["encoder_ms"][name] = f"unsupported: {type(error).__name__}: {str(error)[:200]}"

    metrics.write_json(os.path.join(_OUT.value, "vit_encoder_smoke.json" if _SMOKE.value else "vit_encoder.json"),
                       result)
    for table in ("attention_ms", "patch_embedding_ms", "encoder_ms"):
        print(table)
        for name, value in result[table].items():
            print(f"  {name:16s} {value:.3f}" if isinstance(value, float) else f"  {name:16s} {value}")
    print(json.dumps(result["encoder_ms"]))


if __name__ == "__main__":
    app.run(main)
