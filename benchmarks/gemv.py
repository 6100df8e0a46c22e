"""GPU micro-benchmark: the decode GEMVs of one layer, XLA against the two Pallas kernels, with a block-size sweep.

    python -m benchmarks.gemv                   # GPU: the 1.2B config's five GEMVs, batch 1, the full sweep
    python -m benchmarks.gemv --batches 1,8 --quick
    python -m benchmarks.gemv --smoke           # CPU: tiny shapes, the kernels in interpret mode

A batch-1 decode token reads every weight once, so each GEMV's floor is its weight bytes over the bandwidth;
`decode_roofline.json` showed the 1.2B token's four layer GEMVs taking 59.6 µs per layer against 22.5 µs of
bytes. Per shape (norm + QKV, o-proj + residual, norm + gate/up + SwiGLU, down + residual, norm + LM head) and
batch this times:
  xla           reference.fused_gemv under jit (what decode_step runs with decode_kernel="xla"),
  xla_rows2     the same with the row duplicated (batch 1 only): XLA's DotStrengthReduction turns a one-row dot
                with < 10M weights into a materialised multiply + reduce, a two-row one stays a GEMM,
  pallas        kernel.fused_gemv (column slabs; decode_kernel="pallas"),
  splitk[...]   splitk.fused_gemv_splitk for every (block_n, block_k, split, num_warps) of the sweep.
Each is timed as dependent calls inside one jitted loop, cycling over enough distinct weight copies (>= 256 MB
in all) that the 50-60 MB L2 cannot serve them, as across a model's layers. A row reports µs, the weight
bytes' rate and its share of the bandwidth measured at the start; `best` per shape names the fastest way and
config, and `splitk_over_xla` the best split-K time over XLA's (> 1: split-K faster).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp

from benchmarks import common
from core import metrics
from kernels_pallas.fused_gemv import kernel, reference, splitk

# (name, K, output width, kind) of core.nn.transformer's 1.2B decode config (benchmarks.decode_roofline).
SHAPES_1_2B = (("qkv", 2048, 4096, "norm"), ("o_proj", 2048, 2048, "residual"), ("gate_up", 2048, 5632, "swiglu"),
               ("down", 5632, 2048, "residual"), ("lm_head", 2048, 32768, "norm"))
SHAPES_SMOKE = (("qkv", 64, 128, "norm"), ("gate_up", 64, 64, "swiglu"), ("down", 64, 64, "residual"))
SWEEP = dict(block_n=(64, 128, 256), block_k=(32, 64), split_scale=(0.5, 1, 2), num_warps=(4, 8))
QUICK = dict(block_n=(128, 256), block_k=(64,), split_scale=(1, 2), num_warps=(4,))
SMOKE = dict(block_n=(32,), block_k=(16,), split_scale=(1,), num_warps=(4,))
L2_DEFEAT_BYTES = 256 << 20


def operands(kind: str, dim: int, width: int, batch: int, copies: int, key) -> tuple[jax.Array, list, dict]:
    """x, `copies` distinct weight sets, and the fixed keyword operands (norm scale or residual)."""
    ks = jax.random.split(key, copies + 2)
    cols = 2 * width if kind == "swiglu" else width
    x = jax.random.normal(ks[0], (batch, dim), jnp.bfloat16)
    weights = [(jax.random.normal(k, (dim, cols), jnp.float32) / math.sqrt(dim)).astype(jnp.bfloat16)
               for k in ks[2:]]
    fixed = (dict(norm_scale=jnp.ones((dim,), jnp.bfloat16)) if kind in ("norm", "swiglu")
             else dict(residual=jax.random.normal(ks[1], (batch, width), jnp.bfloat16)))
    return x, weights, fixed


def seconds_per_gemv(gemv, x, weights, fixed, calls: int) -> float:
    """Dependent calls in one jitted loop: each call's x is shifted by a scalar carried from the last output."""
    @jax.jit
    def loop(x, weights, fixed):
        def body(_, carry):
            for w in weights:
                y = gemv(x + carry, w, **fixed)
                carry = (1e-6 * y[0, 0]).astype(x.dtype)
            return carry
        return jax.lax.fori_loop(0, max(1, calls // len(weights)), body, jnp.zeros((), x.dtype))
    total = max(1, calls // len(weights)) * len(weights)
    return common.seconds_per_call(loop, x, weights, fixed, repeats=3, reduce="best") / total


def _two_rows(gemv, x, w, **fixed):
    """One row computed as two (the second a copy), so XLA keeps the dot a GEMM instead of multiply + reduce."""
    fixed = {k: jnp.concatenate([v, v]) if k == "residual" else v for k, v in fixed.items()}
    return gemv(jnp.concatenate([x, x]), w, **fixed)[:1]


def ways(kind: str, dim: int, width: int, batch: int, sweep: dict, interpret: bool):
    """(label, config, gemv(x, w, norm_scale=|residual=)) for every way to compute this GEMV."""
    swiglu = kind == "swiglu"
    yield "xla", {}, functools.partial(reference.fused_gemv, swiglu=swiglu)
    if batch == 1:      # XLA strength-reduces a 1-row dot under 10M weights to multiply + reduce; 2 rows do not
        yield "xla_rows2", {}, functools.partial(_two_rows, functools.partial(reference.fused_gemv, swiglu=swiglu))
    try:
        kernel_gemv = functools.partial(kernel.fused_gemv, swiglu=swiglu, interpret=interpret)
        yield "pallas", {}, kernel_gemv
    except ValueError:
        pass
    seen = set()
    for block_n, block_k, scale, warps in itertools.product(sweep["block_n"], sweep["block_k"],
                                                            sweep["split_scale"], sweep["num_warps"]):
        base = splitk.default_split(dim, width, splitk.largest_pow2_divisor(width, block_n), min(block_k, dim))
        split = max(1, int(base * scale))
        config = dict(block_n=block_n, block_k=block_k, split=split, num_warps=warps)
        if tuple(config.values()) in seen or dim % split or dim // split < block_k:
            continue
        seen.add(tuple(config.values()))
        yield "splitk", config, functools.partial(splitk.fused_gemv_splitk, swiglu=swiglu, interpret=interpret,
                                                  **config)


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--batches", default="1", help="rows per GEMV, comma-separated")
    parser.add_argument("--shapes", default="", help="names from the 1.2B set to run (default all)")
    parser.add_argument("--quick", action="store_true", help="a 4-config split-K sweep instead of the full one")
    parser.add_argument("--calls", type=int, default=256, help="timed dependent calls per way")
    args = parser.parse_args(argv)
    device = common.measure_device(args.smoke)
    common.print_device(device)
    interpret = jax.default_backend() != "gpu"
    shapes = SHAPES_SMOKE if args.smoke else tuple(s for s in SHAPES_1_2B
                                                   if not args.shapes or s[0] in args.shapes.split(","))
    sweep = SMOKE if args.smoke else QUICK if args.quick else SWEEP
    calls = 2 if args.smoke else args.calls
    rows, best = [], {}
    for batch in (int(b) for b in args.batches.split(",")):
        for name, dim, width, kind in shapes:
            weight_bytes = dim * width * (2 if kind == "swiglu" else 1) * 2
            copies = 1 if args.smoke else max(2, -(-L2_DEFEAT_BYTES // weight_bytes))
            x, weights, fixed = operands(kind, dim, width, batch, copies, jax.random.key(0))
            want = jax.jit(functools.partial(reference.fused_gemv, swiglu=kind == "swiglu"))(x, weights[0], **fixed)
            for label, config, gemv in ways(kind, dim, width, batch, sweep, interpret):
                row = dict(shape=name, batch=batch, k=dim, n=width, kind=kind, way=label, config=config,
                           weight_bytes=weight_bytes, copies=copies)
                try:
                    got = jax.jit(gemv)(x, weights[0], **fixed)
                    row["max_abs_err"] = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want.astype(jnp.float32))))
                    seconds = seconds_per_gemv(gemv, x, weights, fixed, calls)
                except Exception as error:      # a config Triton cannot lower is recorded, not fatal
                    row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                    rows.append(row)
                    print(f"{name:>8} B={batch:<2d} {label:>6} {config}: {row['error']}", flush=True)
                    continue
                row.update(us=seconds * 1e6, bandwidth=common.against_device(weight_bytes / seconds, device, "bytes"))
                rows.append(row)
                print(f"{name:>8} B={batch:<2d} {label:>6} {str(config):58s} {row['us']:8.2f} us  "
                      f"{weight_bytes / seconds / 1e12:5.2f} TB/s  {row['bandwidth']['vs_measured']:6.1%} of measured"
                      f"  err {row['max_abs_err']:.3g}", flush=True)
            timed = [r for r in rows if r["shape"] == name and r["batch"] == batch and "us" in r]
            fastest = lambda way: min((r for r in timed if r["way"] == way), key=lambda r: r["us"], default=None)
            top, xla, split = min(timed, key=lambda r: r["us"]), fastest("xla"), fastest("splitk")
            best[f"{name}_b{batch}"] = dict(way=top["way"], config=top["config"], us=top["us"],
                                            vs_measured=top["bandwidth"]["vs_measured"],
                                            xla_us=xla["us"] if xla else None,
                                            splitk_over_xla=xla["us"] / split["us"] if xla and split else None)
            print(f"{name:>8} B={batch:<2d} best: {best[f'{name}_b{batch}']}", flush=True)
    out = common.run_info("gemv", args, device=device, sweep=sweep, calls=calls, best=best, rows=rows)
    path = common.result_path(args, "gemv")
    metrics.write_json(path, out)
    print("wrote", path)


if __name__ == "__main__":
    main()
