"""GPU profile: where LeWM's train step and one CEM plan spend their time (device kernels vs launch gaps).

    python benchmarks/profile_lewm.py [--env tworoom] [--out $OUT]

Writes profile_lewm.json: per call, wall time, device busy time, kernel count and the top kernels, for the
train step (batch 128, bf16, fixed batch) and for one plan (batch 1, the evaluation's jitted CEM).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_ENV = flags.DEFINE_string("env", "tworoom", "tworoom or pusht.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny config (CPU check).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Profiled calls of each program.")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Output directory.")


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from core import config as config_lib, metrics, profile, sharding, train
    from papers.lewm import evaluate, planning
    from papers.lewm import train as lewm_train

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = config_lib.load_config(f"{root}/configs/lewm/{_ENV.value}.py" + (":smoke" if _SMOKE.value else ""))
    model, graphdef, state, step_fn, mesh = lewm_train.make_train_setup(config)
    batch = sharding.shard_batch(lewm_train.make_batch_fn(config)(0), mesh)
    holder = {"state": state}

    def train_call():
        holder["state"], out = step_fn(holder["state"], batch)
        return out["loss"]

    trace_root = tempfile.mkdtemp(prefix="profile_lewm_")     # traces are large; the JSON is the result
    result = metrics.run_info("profile_lewm", env=_ENV.value, repeats=_REPEATS.value)
    result["train_step"] = profile.device_summary(train_call, _REPEATS.value, f"{trace_root}/train")

    model = train.merge_model(graphdef, holder["state"])
    model.eval()
    mgraph, mstate = nnx.split(model)
    d, h = config.model.embed_dim, config.model.history
    fa = config.model.frameskip * config.model.action_dim
    args = (jnp.zeros((h, d)), jnp.zeros((h - 1, fa)), jnp.ones((d,)), jax.random.key(0))
    for dtype in ("float32", "bfloat16"):
        plan_config = config_lib.apply_overrides(config, {"eval.compute_dtype": dtype})
        plan_fn = jax.jit(lambda s, z, p, g, k, c=plan_config: planning.plan(
            planning.planning_model(mgraph, s, c), z, p, g, k, c))
        result[f"plan_{dtype}"] = profile.device_summary(lambda: plan_fn(mstate, *args), _REPEATS.value,
                                                         f"{trace_root}/plan_{dtype}")
        profile.describe_kernels(result[f"plan_{dtype}"], plan_fn.lower(mstate, *args).compile().as_text())
        result[f"plan_{dtype}"]["plan_s_unprofiled"] = evaluate.time_one_plan(model, plan_config)
    profile.describe_kernels(result["train_step"], step_fn.lower(holder["state"], batch).compile().as_text())
    for name in ("train_step", "plan_float32", "plan_bfloat16"):
        result[name].pop("trace")
    metrics.write_json(os.path.join(_OUT.value, "profile_lewm_smoke.json" if _SMOKE.value else "profile_lewm.json"),
                       result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
