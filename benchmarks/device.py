"""The device's ceilings, measured: streaming bandwidth (f32 x + 1 and a bf16 scale, bytes read + written) and
bf16 matmul peak (8192^3), each timed with calls queued back to back and, for contrast, as the best single
call waited for (which adds a host round trip to a ~1 ms kernel), next to the spec values.

    python -m benchmarks.device            # GPU: benchmarks/results/device.json
    python -m benchmarks.device --smoke    # CPU, tiny sizes
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks import common
from core import metrics


def main() -> None:
    args = common.arg_parser(__doc__).parse_args()
    nbytes, n = (4 << 20, 256) if args.smoke else (2 << 30, 8192)
    device = common.measure_device(args.smoke)
    common.print_device(device)
    rows = {}
    for repeats in (5, 20, 50):
        rows[f"f32_stream_queued_x{repeats}_bytes_per_s"] = common.measure_bandwidth(nbytes, repeats)
        rows[f"bf16_matmul_queued_x{repeats}_flops"] = common.measure_matmul(n, repeats)
    x = jnp.zeros((nbytes // 4,), jnp.float32)
    rows["f32_stream_best_single_call_bytes_per_s"] = 2 * x.nbytes / common.seconds_per_call(
        jax.jit(lambda x: x + 1.0), x, repeats=5, reduce="best")
    y = jnp.zeros((2 * nbytes // 2,), jnp.bfloat16)
    rows["bf16_stream_queued_x20_bytes_per_s"] = 2 * y.nbytes / common.seconds_per_call(
        jax.jit(lambda y: y * 2), y, repeats=20)
    for name, value in rows.items():
        unit = 1e12
        print(f"{name:48s} {value / unit:8.2f} {'TB/s' if 'bytes' in name else 'TFLOP/s'}")
    metrics.write_json(common.result_path(args, "device"), common.run_info("device", args, device=device, rows=rows))


if __name__ == "__main__":
    main()
