"""GPU profile: where LeWM's train step and one CEM plan spend their time (device kernels vs launch gaps).

    python -m benchmarks.profile_lewm [--env tworoom]     # GPU
    python -m benchmarks.profile_lewm --smoke             # CPU check (no device tracks: wall time only)

Writes profile_lewm.json: per call, wall time, device busy time, kernel count and the top kernels (named by
the JAX ops they fuse, benchmarks.profiling), for the train step (the trainer of benchmarks.train_lewm on a
fixed batch) and for one plan (batch 1, the evaluation's jitted CEM) in float32 and bfloat16.
"""

from __future__ import annotations

import json
import tempfile

from benchmarks import common


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--env", default="tworoom", choices=("tworoom", "pusht"))
    parser.add_argument("--repeats", type=int, default=5, help="profiled calls of each program")
    args = parser.parse_args(argv)
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks import profiling
    from benchmarks.train_lewm import make_setup
    from core import config as config_lib, metrics, sharding
    from papers.lewm import evaluate, planning

    config = common.load_config(f"lewm/{args.env}", "smoke" if args.smoke else "")
    setup, batch_at = make_setup(config)
    batch = sharding.shard_batch(batch_at(0), setup.mesh)
    holder = {"state": setup.state}

    def train_call():
        holder["state"], out = setup.step_fn(holder["state"], batch)
        return out["loss"]

    trace_root = tempfile.mkdtemp(prefix="profile_lewm_")     # traces are large; the JSON is the result
    result = common.run_info("profile_lewm", args, config=config.to_dict(), env=args.env)
    result["train_step"] = profiling.device_summary(train_call, args.repeats, f"{trace_root}/train")

    setup.state = holder["state"]
    model = setup.model()
    model.eval()
    mgraph, mstate = nnx.split(model)
    d, h = config.model.embed_dim, config.model.history
    fa = config.model.frameskip * config.model.action_dim
    plan_args = (jnp.zeros((h, d)), jnp.zeros((h - 1, fa)), jnp.ones((d,)), jax.random.key(0))
    cem = planning.cem_settings(config)
    for dtype in ("float32", "bfloat16"):
        plan_config = config_lib.apply_overrides(config, {"eval.compute_dtype": dtype})
        plan_fn = jax.jit(lambda s, z, p, g, k, dtype=dtype: planning.plan(
            planning.planning_model(mgraph, s, dtype), z, p, g, k, **cem))
        result[f"plan_{dtype}"] = profiling.device_summary(lambda: plan_fn(mstate, *plan_args), args.repeats,
                                                           f"{trace_root}/plan_{dtype}")
        profiling.describe_kernels(result[f"plan_{dtype}"], plan_fn.lower(mstate, *plan_args).compile().as_text())
        result[f"plan_{dtype}"]["plan_s_unprofiled"] = evaluate.time_one_plan(model, plan_config)
    profiling.describe_kernels(result["train_step"],
                               setup.step_fn.lower(holder["state"], batch).compile().as_text())
    for name in ("train_step", "plan_float32", "plan_bfloat16"):
        result[name].pop("trace")
    metrics.write_json(common.result_path(args, "profile_lewm"), result)
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))


if __name__ == "__main__":
    main()
