"""GPU benchmark: LeWM train steps/s at the paper's configuration (ViT-tiny/14 at 224 px, batch 128, bf16).

    python benchmarks/train_lewm.py [--steps 30] [--env tworoom]

Two figures from the same run: the train step alone on a fixed batch (model throughput), and the full step
including on-device clip generation and rendering (what training actually runs at).
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps.")
_ENV = flags.DEFINE_string("env", "tworoom", "tworoom or pusht.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny config (CPU check).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Output directory.")


def main(argv):
    del argv
    import jax

    from core import config as config_lib, metrics, sharding
    from papers.lewm import train as lewm_train
    from papers.lewm.model import param_count

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = config_lib.load_config(f"{root}/configs/lewm/{_ENV.value}.py" + (":smoke" if _SMOKE.value else ""))
    model, graphdef, state, step_fn, mesh = lewm_train.make_train_setup(config)
    batch_at = lewm_train.make_batch_fn(config)

    def timed(fresh_batches: bool) -> float:
        nonlocal state
        batch = sharding.shard_batch(batch_at(0), mesh)
        for i in range(2):   # compile + warm
            state, step_metrics = step_fn(state, sharding.shard_batch(batch_at(i), mesh) if fresh_batches else batch)
        jax.block_until_ready(step_metrics["loss"])
        t0 = time.perf_counter()
        for i in range(_STEPS.value):
            state, step_metrics = step_fn(state, sharding.shard_batch(batch_at(i), mesh) if fresh_batches else batch)
        jax.block_until_ready(step_metrics["loss"])
        return _STEPS.value / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    jax.block_until_ready(batch_at(0))
    data_compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(_STEPS.value):
        batch = batch_at(i + 1)
    jax.block_until_ready(batch)
    data_batches_per_s = _STEPS.value / (time.perf_counter() - t0)
    model_only = timed(False)
    with_data = timed(True)
    result = metrics.run_info(
        "train_lewm", env=_ENV.value, params=param_count(model), batch_size=config.data.batch_size,
        image_size=config.model.image_size, compute_dtype="bfloat16",
        train_steps_per_s=with_data, train_steps_per_s_fixed_batch=model_only,
        data_batches_per_s=data_batches_per_s, data_compile_s=data_compile_s,
        frames_per_s_trained=with_data * config.data.batch_size * (config.model.history + 1))
    metrics.write_json(os.path.join(_OUT.value, "train_lewm_smoke.json" if _SMOKE.value else "train_lewm.json"), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
