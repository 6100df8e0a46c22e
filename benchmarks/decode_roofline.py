"""Batch-1 autoregressive decode speed of core.nn.transformer against the HBM roofline.

Random bf16 weights (cast once, fused QKV and gate/up: `inference_params`), layers unrolled with one KV-cache
array per layer updated in place (cache donated), `max_new_tokens` greedy steps inside ONE jitted fori_loop.
roofline = floor / measured, floor = (weights read per token + KV read per token) / bandwidth, against both
the bandwidth measured at the start (benchmarks.common.measure_device) and the device's spec; the weights read
per token are every layer matrix + the LM head (the embedding lookup reads one row) and the KV read is the
attended prefix, averaged over the generated tokens.

    python -m benchmarks.decode_roofline                 # GPU: 1.2B and 350M configs, every variant
    python -m benchmarks.decode_roofline --configs 1.2B  # GPU: the issue's `roofline.1.2B` (~3 rows)
    python -m benchmarks.decode_roofline --smoke         # CPU: a tiny config, checks the script runs

Variants (`--variants`, cached attention / decode GEMVs): "pallas/xla" (Pallas cached attention, XLA's
matmuls with separate norm / SwiGLU / residual kernels), "pallas/xla_two_rows" (the same, each batch-1 dot
computed on two copies of the row so XLA keeps it a cuBLAS GEMM instead of a multiply + reduce),
"pallas/pallas" (the same attention with kernels_pallas.fused_gemv: norm + QKV, norm + gate/up + SwiGLU,
o-proj + residual, down + residual, one kernel each), "pallas/pallas_splitk" (the same fusions in the split-K
kernel, fused_gemv/splitk.py, the LM head too), "reference/xla" (jnp attention). `roofline.<config>` is the
best variant of each config. Each row also has `profile`: kernels and device-busy µs per token and the top
kernels per token (benchmarks.profiling), i.e. where the time beyond the weight reads goes.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common
from core import metrics
from core.nn import transformer as tfm
from core.nn.decode import decode_step, inference_params

CONFIGS = {
    "1.2B": tfm.TransformerConfig(vocab_size=32768, d_model=2048, n_layers=24, n_heads=16, n_kv_heads=8,
                                  head_dim=128, mlp_dim=5632, max_seq_len=2048, tie_embeddings=False),
    "350M": tfm.TransformerConfig(vocab_size=32768, d_model=1024, n_layers=24, n_heads=16, n_kv_heads=8,
                                  head_dim=64, mlp_dim=2816, max_seq_len=2048, tie_embeddings=False),
    "smoke": tfm.TransformerConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                   head_dim=16, mlp_dim=128, max_seq_len=256, tie_embeddings=False),
}


def random_params(config: tfm.TransformerConfig, seed: int = 0) -> dict:
    """Builds the model and casts it inside one jit, so no f32 copy of a large model lives on the device."""
    make = lambda key: inference_params(tfm.Transformer(config, rngs=nnx.Rngs(key)), jnp.bfloat16)
    return jax.jit(make)(jax.random.key(seed))


def make_generate(config: tfm.TransformerConfig, num_tokens: int):
    def generate(params, cache, token):
        def body(_, carry):
            cache, token = carry
            logits, cache = decode_step(params, config, token, cache)
            return cache, jnp.argmax(logits, -1).astype(jnp.int32)
        return jax.lax.fori_loop(0, num_tokens, body, (cache, token))
    return jax.jit(generate, donate_argnums=1)


def weight_bytes_per_token(params: dict) -> int:
    everything = sum(x.nbytes for x in jax.tree.leaves(params))
    return everything - params["embed"].nbytes + params["embed"][0].nbytes


def kv_bytes_per_token(config: tfm.TransformerConfig, prompt_len: int, num_tokens: int) -> float:
    mean_context = prompt_len + (num_tokens + 1) / 2
    return config.n_layers * 2 * config.n_kv_heads * config.head_dim * 2 * mean_context


def measure(name: str, config: tfm.TransformerConfig, args, device: dict) -> dict:
    params = random_params(config)
    generate = make_generate(config, args.max_new_tokens)
    token = jnp.zeros((1,), jnp.int32)

    def fresh_cache():
        cache = tfm.init_cache(config, 1, args.cache_slots, jnp.bfloat16)
        return jax.block_until_ready(tfm.rollback(cache, jnp.full((1,), args.prompt_len, jnp.int32)))

    start = time.perf_counter()
    jax.block_until_ready(generate(params, fresh_cache(), token))
    compile_s = time.perf_counter() - start
    jax.block_until_ready(generate(params, fresh_cache(), token))       # second warm-up, untimed
    times = []
    for _ in range(args.repeats):
        cache = fresh_cache()
        start = time.perf_counter()
        jax.block_until_ready(generate(params, cache, token))
        times.append(time.perf_counter() - start)
    ms_per_token = 1e3 * min(times) / args.max_new_tokens
    profile = kernel_profile(generate, params, fresh_cache, token, args.max_new_tokens) if args.profile else None
    weights, kv = weight_bytes_per_token(params), kv_bytes_per_token(config, args.prompt_len, args.max_new_tokens)
    roofline = common.against_device((weights + kv) / (ms_per_token / 1e3), device, "bytes")
    return dict(name=name, params=tfm.param_count(config), cache_attention=config.cache_attention,
                decode_kernel=config.decode_kernel, variant=f"{config.cache_attention}/{config.decode_kernel}",
                ms_per_token=ms_per_token, ms_per_token_median=1e3 * float(np.median(times)) / args.max_new_tokens,
                floor_ms_measured=ms_per_token * roofline["vs_measured"],
                floor_ms_spec=ms_per_token * roofline["vs_spec"] if roofline["vs_spec"] else None,
                roofline=roofline, weight_bytes=weights, kv_bytes=kv,
                compile_s=compile_s, profile=profile, config=dataclasses.asdict(config))


def kernel_profile(generate, params, fresh_cache, token, num_tokens: int, top: int = 12) -> dict:
    """Where a token's time goes, by device kernel (benchmarks.profiling over two whole generate calls):
    kernels and device-busy µs per token, the rest being gaps between kernels, and the top kernels per token
    with the JAX ops each XLA fusion holds. CPU has no device tracks: only the wall time is filled."""
    from benchmarks import profiling

    summary = profiling.device_summary(lambda: generate(params, fresh_cache(), token), repeats=2, top=top)
    hlo = generate.lower(params, fresh_cache(), token).compile().as_text()
    summary = profiling.describe_kernels(summary, hlo)
    per_token = lambda v: v / num_tokens
    return dict(kernels_per_token=per_token(summary["kernels_per_call"]),
                device_busy_us_per_token=per_token(summary["device_busy_us_per_call"]),
                kernel_us_per_token=per_token(summary["kernel_us_per_call"]),
                wall_us_per_token=per_token(summary["wall_us_per_call"]),
                top_kernels=[dict(k, count_per_token=per_token(k["count_per_call"]),
                                  us_per_token=per_token(k["us_per_call"])) for k in summary["top_kernels"]])


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--configs", default="1.2B,350M")
    parser.add_argument("--variants",
                        default="pallas/xla,pallas/xla_two_rows,pallas/pallas,pallas/pallas_splitk,reference/xla",
                        help="cache_attention/decode_kernel pairs to compare, comma-separated")
    parser.add_argument("--prompt_len", type=int, default=64)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--cache_slots", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no_profile", dest="profile", action="store_false",
                        help="skip the per-kernel profile of each row (two more generate calls under the profiler)")
    args = parser.parse_args(argv)
    device = common.measure_device(args.smoke)
    common.print_device(device)
    names = ["smoke"] if args.smoke else args.configs.split(",")
    smoke_variants = ["reference/xla", "reference/xla_two_rows", "reference/pallas", "reference/pallas_splitk"]
    variants = smoke_variants if args.smoke else args.variants.split(",")     # smoke: CPU, Pallas interpreted
    if args.smoke:
        args.max_new_tokens, args.cache_slots, args.repeats = 8, 128, 2
    rows = []
    path = common.result_path(args, "decode_roofline")
    # written after every row, so a cut run keeps the rows it finished
    write = lambda: metrics.write_json(path, make_result(args, names, rows, device))
    for name in names:
        for variant in variants:
            attention, gemv = variant.split("/")
            config = dataclasses.replace(CONFIGS[name], cache_attention=attention, decode_kernel=gemv)
            row = measure(name, config, args, device)
            rows.append(row)
            print(f"{name:>6} {variant:>13}  {row['params'] / 1e6:7.0f}M params  {row['ms_per_token']:.3f} ms/token"
                  f"  floor {row['floor_ms_measured']:.3f} ms  roofline {row['roofline']['vs_measured']:.1%} of "
                  f"measured  compile {row['compile_s']:.0f}s", flush=True)
            write()
    print(f"wrote {path}")


def make_result(args, names, rows, device) -> dict:
    best = {name: max((r for r in rows if r["name"] == name), key=lambda r: r["roofline"]["vs_measured"])
            for name in names if any(r["name"] == name for r in rows)}
    return common.run_info("decode_roofline", args, device=device,
                           settings=dict(batch=1, dtype="bfloat16"),
                           roofline={name: r["roofline"] for name, r in best.items()},
                           best_variant={name: r["variant"] for name, r in best.items()},
                           roofline_by_variant={f"{r['name']} {r['variant']}": r["roofline"]["vs_measured"]
                                                for r in rows}, rows=rows)


if __name__ == "__main__":
    main()
