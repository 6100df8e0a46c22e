"""GPU benchmark: the pieces of LeWM's ViT-tiny/14 encoder step (512 frames at 224 px, bf16, fwd + bwd).

    python -m benchmarks.vit_encoder            # GPU
    python -m benchmarks.vit_encoder --smoke    # CPU check

Three tables from one run: attention at 257 tokens (XLA vs cuDNN with the sequence padded to a multiple
of 64, of 8, or not at all); the patch embedding alone as cuDNN's stride-14 conv vs one GEMM on
patchified pixels (the ViT keeps the conv, see core/nn/vit.py); the whole encoder for each attention
padding, with q, k, v padded in every layer or the token sequence padded once before the blocks (`_once`).
Time per fwd+bwd call.
"""

from __future__ import annotations

import functools
import json

from benchmarks import common


def patchify(pixels, patch: int):
    """[B, H, W, C] -> [B, patches, p·p·C] in the order of a [p, p, C, width] conv kernel."""
    b, h, w, c = pixels.shape
    x = pixels.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


PADDINGS = {"cudnn_pad64": 64, "cudnn_pad8": 8, "cudnn_unpadded": None}


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--frames", type=int, default=512, help="frames per step (batch 128 x 4 frames)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per row")
    args = parser.parse_args(argv)
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from core import metrics, precision
    from core.nn import vit

    device = common.measure_device(args.smoke)
    common.print_device(device)
    frames, size = (4, 28) if args.smoke else (args.frames, 224)
    depth = 1 if args.smoke else vit.ViTConfig().depth       # smoke: one block compiles in seconds on CPU
    config = vit.ViTConfig(image_size=size, depth=depth)
    tokens = config.num_patches + 1
    repeats = 2 if args.smoke else args.repeats
    ms = lambda fn, *xs: 1e3 * common.seconds_per_call(fn, *xs, repeats=repeats)
    grad_of = lambda f: jax.jit(jax.grad(lambda *a: f(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
    result = common.run_info("vit_encoder", args, device=device, depth=depth, frames=frames, image_size=size, tokens=tokens,
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
        model = vit.ViT(vit.ViTConfig(image_size=size, depth=depth, **options), nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        params = precision.cast_floating(params, jnp.bfloat16)
        step = jax.jit(jax.grad(lambda p, x: nnx.merge(graphdef, p)(x).astype(jnp.float32).sum()))
        try:
            result["encoder_ms"][name] = ms(step, params, pixels)
        except Exception as error:
            result["encoder_ms"][name] = f"unsupported: {type(error).__name__}: {str(error)[:200]}"

    metrics.write_json(common.result_path(args, "vit_encoder"), result)
    for table in ("attention_ms", "patch_embedding_ms", "encoder_ms"):
        print(table)
        for name, value in result[table].items():
            print(f"  {name:16s} {value:.3f}" if isinstance(value, float) else f"  {name:16s} {value}")
    print(json.dumps(result["encoder_ms"]))


if __name__ == "__main__":
    main()
