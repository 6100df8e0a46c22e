"""What every benchmark shares: arguments, config loading, result paths, the results header (with the device
measured, not assumed), timing and the compile guard.

    parser = common.arg_parser(__doc__)                      # --smoke, --out
    args = parser.parse_args()
    device = common.measure_device(args.smoke)              # streaming bandwidth + bf16 matmul peak, and spec
    result = common.run_info("name", args, config=config.to_dict(), device=device, rows=rows)
    metrics.write_json(common.result_path(args, "name"), result)

Every roofline / MFU figure is given against both the measured and the spec value (`against_device`), so a
share of "the roofline" never hides which ceiling it is a share of.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from core import config as config_lib
from core import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join("benchmarks", "results")


# ----------------------------------------------------------------------------------------------------------
# Arguments, configs, paths.

def arg_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the module docstring, with the two flags every benchmark has."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU in seconds: checks the script; "
                        "results go to <name>_smoke.json")
    parser.add_argument("--out", default=RESULTS_DIR, help="directory for the JSON and figures")
    return parser


def load_config(name: str, *args: str) -> Any:
    """configs/<name>.py with get_config(",".join(args)), e.g. load_config("lewm/tworoom", "smoke")."""
    arg = ",".join(a for a in args if a)
    return config_lib.load_config(os.path.join(ROOT, "configs", f"{name}.py") + (f":{arg}" if arg else ""))


def result_name(name: str, smoke: bool) -> str:
    """`name`, or `name_smoke` for a smoke run (git-ignored, so a CPU check never overwrites a GPU result)."""
    return f"{name}_smoke" if smoke else name


def result_path(args: argparse.Namespace, name: str, ext: str = "json") -> str:
    return os.path.join(args.out, f"{result_name(name, args.smoke)}.{ext}")


# ----------------------------------------------------------------------------------------------------------
# The results header.

def command_line() -> str:
    """How this process was started, as `python -m benchmarks.x ...` when it was run as a module."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = f"-m {spec.name}" if spec is not None and spec.name else os.path.relpath(sys.argv[0])
    return " ".join(["python", head] + sys.argv[1:])


def run_info(benchmark: str, args: argparse.Namespace | None = None, **fields) -> dict:
    """The header of every benchmark JSON: name, UTC date, device, library versions, command line, the
    benchmark's arguments; `fields` follow (config=..., device=measure_device(...), results...)."""
    import flax
    import optax

    header = dict(benchmark=benchmark, date=datetime.datetime.now(datetime.UTC).isoformat(),
                  device_kind=jax.devices()[0].device_kind, platform=jax.devices()[0].platform,
                  num_devices=jax.device_count(),
                  versions=dict(jax=jax.__version__, flax=flax.__version__, optax=optax.__version__),
                  command=command_line())
    if args is not None:
        header["args"] = vars(args)
    return dict(header, **fields)


class Report:
    """A results dict rewritten atomically after every phase, so a run cut short still leaves its figures."""

    def __init__(self, path: str, data: dict):
        self.path, self.data = path, dict(data)

    def update(self, **fields) -> None:
        self.data.update(fields)
        metrics.write_json(self.path, self.data)


# ----------------------------------------------------------------------------------------------------------
# Timing and the compile guard.

def seconds_per_call(fn: Callable, *args, repeats: int = 10, reduce: str = "mean") -> float:
    """Wall seconds per call of `fn(*args)` after one warm-up (compiling) call. "mean": `repeats` calls
    back to back (dispatch overlaps execution, as in a training loop); "best": the fastest of `repeats`
    calls, each waited for. Raises if a timed call compiles."""
    if reduce not in ("mean", "best"):
        raise ValueError(f"reduce must be 'mean' or 'best', got {reduce!r}.")
    jax.block_until_ready(fn(*args))
    with no_compiles(getattr(fn, "__name__", "timed call")):
        if reduce == "best":
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(fn(*args))
                best = min(best, time.perf_counter() - start)
            return best
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn(*args)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / repeats


class CompileCounter:
    """Counts XLA backend compilations while active (`with CompileCounter() as c: ...; c.count`).

    jit's dispatch-cache size also grows for committed vs uncommitted inputs, which are not recompilations,
    so the counter listens to the backend-compile event instead. That event spans the persistent cache's
    lookup too, so with JAX_COMPILATION_CACHE_DIR set a program loaded from disk still counts (tested).
    """

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0

    def _listener(self, event: str, duration: float, **kwargs) -> None:
        del duration, kwargs
        self.count += event == self.EVENT

    def __enter__(self) -> "CompileCounter":
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listener)


@contextlib.contextmanager
def no_compiles(what: str):
    """Raises RuntimeError if anything compiles inside: a compile in a timed region makes its figure void."""
    with CompileCounter() as counter:
        yield counter
    if counter.count:
        raise RuntimeError(f"{what}: {counter.count} compilation(s) inside the timed calls; warm up every "
                           "shape and placement before timing.")


# ----------------------------------------------------------------------------------------------------------
# The device: measured streaming bandwidth and bf16 matmul peak, next to the spec sheet.

# (substring of jax's device_kind, HBM bytes/s, dense bf16 FLOP/s), first match wins.
SPECS = (
    ("H200", 4.8e12, 989e12),
    ("H100 PCIe", 2.0e12, 756e12),
    ("H100", 3.35e12, 989e12),        # SXM ("NVIDIA H100 80GB HBM3")
    ("A100-SXM4-80GB", 2.039e12, 312e12),
    ("A100", 1.555e12, 312e12),
)


def device_spec(device_kind: str) -> dict:
    """Spec-sheet bandwidth and bf16 dense peak of a device kind; None for a device not in SPECS."""
    for name, bandwidth, flops in SPECS:
        if name in device_kind:
            return dict(spec_name=name, spec_bytes_per_s=bandwidth, spec_bf16_flops=flops)
    return dict(spec_name=None, spec_bytes_per_s=None, spec_bf16_flops=None)


def measure_bandwidth(nbytes: int, repeats: int = 50) -> float:
    """Streaming bytes/s of x + 1 over an f32 array of `nbytes`, counting the bytes read and the bytes written
    (a uint8 elementwise op would under-report: it is not bandwidth-bound). The passes run in one program, a
    loop whose carry is updated in place, so no pass allocates: timing separate calls charged the allocator's
    growth to the copy (950 GB/s on an H200 with XLA_PYTHON_CLIENT_PREALLOCATE=false). The barrier keeps XLA
    from fusing the passes into one; the first pass also copies the input into the carry, hence repeats + 1."""
    x = jnp.zeros((nbytes // 4,), jnp.float32)

    def passes(x):
        return jax.lax.fori_loop(0, repeats, lambda i, v: jax.lax.optimization_barrier(v + 1.0), x)

    seconds = seconds_per_call(jax.jit(passes), x, repeats=3, reduce="best")
    return 2 * x.nbytes * (repeats + 1) / seconds


def measure_matmul(n: int, repeats: int = 20) -> float:
    """bf16 FLOP/s of [n, n] @ [n, n] matmuls (f32 accumulation, bf16 out), `repeats` queued back to back."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    seconds = seconds_per_call(jax.jit(jnp.matmul), a, b, repeats=repeats, reduce="mean")
    return 2 * n ** 3 / seconds


@functools.cache
def measure_device(smoke: bool = False) -> dict:
    """The device this process runs on: its name, measured bandwidth (a 2 GiB f32 stream) and bf16 matmul
    peak (8192^3), and the spec values. Smoke: tiny sizes, labelled, figures meaningless."""
    nbytes, n = (4 << 20, 256) if smoke else (2 << 30, 8192)
    device = jax.devices()[0]
    return dict(name=device.device_kind, platform=device.platform, **device_spec(device.device_kind),
                measured_bytes_per_s=measure_bandwidth(nbytes), measured_bf16_flops=measure_matmul(n),
                measurement=dict(copy_bytes=nbytes, matmul_n=n, dtype="float32 stream / bfloat16 matmul",
                                 label="smoke sizes: not a hardware figure" if smoke else "full sizes"))


def against_device(achieved: float, device: dict, kind: str) -> dict:
    """A rate as a fraction of the measured and the spec ceiling: kind "bytes" (bytes/s vs bandwidth) or
    "flops" (FLOP/s vs bf16 matmul peak); None where the spec is unknown."""
    key = {"bytes": "bytes_per_s", "flops": "bf16_flops"}[kind]
    spec = device[f"spec_{key}"]
    return dict(vs_measured=achieved / device[f"measured_{key}"], vs_spec=achieved / spec if spec else None,
                device=device["name"])


def print_device(device: dict) -> None:
    spec = (f"spec {device['spec_bytes_per_s'] / 1e9:.0f} GB/s, {device['spec_bf16_flops'] / 1e12:.0f} TFLOP/s"
            if device["spec_name"] else "no spec entry")
    print(f"device {device['name']}: measured {device['measured_bytes_per_s'] / 1e9:.0f} GB/s, "
          f"{device['measured_bf16_flops'] / 1e12:.1f} bf16 TFLOP/s ({device['measurement']['label']}); {spec}",
          flush=True)
