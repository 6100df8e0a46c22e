"""GPU profile: where LeWM's train step and one CEM plan spend their time (device kernels vs launch gaps).

    python -m benchmarks.profile_lewm [--env tworoom]     # GPU
    python -m benchmarks.profile_lewm --env pusht --skip_train --predictor_kernels xla,pallas   # GPU: fused blocks
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
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma list of plan compute dtypes")
    parser.add_argument("--predictor_kernels", default="xla", help="comma list of LeWMConfig.predictor_kernel to "
                        "plan with: xla (keys plan_<dtype>), pallas (keys plan_<dtype>_pallas: four fused launches per "
                        "predictor block)")
    parser.add_argument("--skip_train", action="store_true", help="profile the plans only")
    args = parser.parse_args(argv)
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks import profiling
    from benchmarks.train_lewm import make_setup
    from core import config as config_lib, metrics, sharding
    from papers.lewm import evaluate, planning
    from papers.lewm import model as lewm_model

    config = common.load_config(f"lewm/{args.env}", "smoke" if args.smoke else "")
    setup, batch_at = make_setup(config)
    batch = sharding.shard_batch(batch_at(0), setup.mesh)
    holder = {"state": setup.state}

    def train_call():
        holder["state"], out = setup.step_fn(holder["state"], batch)
        return out["loss"]

    trace_root = tempfile.mkdtemp(prefix="profile_lewm_")     # traces are large; the JSON is the result
    result = common.run_info("profile_lewm", args, config=config.to_dict(), env=args.env)
    if not args.skip_train:
        result["train_step"] = profiling.device_summary(train_call, args.repeats, f"{trace_root}/train")

    setup.state = holder["state"]
    trained = setup.model()
    trained.eval()
    d, h = config.model.embed_dim, config.model.history
    fa = config.model.frameskip * config.model.action_dim
    plan_args = (jnp.zeros((h, d)), jnp.zeros((h - 1, fa)), jnp.ones((d,)), jax.random.key(0))
    cem = planning.cem_settings(config)
    names = [] if args.skip_train else ["train_step"]
    for kernel in args.predictor_kernels.split(","):
        model = lewm_model.with_predictor_kernel(trained, kernel)
        mgraph, mstate = nnx.split(model)
        for dtype in args.dtypes.split(","):
            name = f"plan_{dtype}" + ("" if kernel == "xla" else f"_{kernel}")
            plan_config = config_lib.apply_overrides(config, {"eval.compute_dtype": dtype})
            plan_fn = jax.jit(lambda s, z, p, g, k, dtype=dtype, mgraph=mgraph: planning.plan(
                planning.planning_model(mgraph, s, dtype), z, p, g, k, **cem))
            result[name] = profiling.device_summary(lambda: plan_fn(mstate, *plan_args), args.repeats,
                                                    f"{trace_root}/{name}")
            profiling.describe_kernels(result[name], plan_fn.lower(mstate, *plan_args).compile().as_text())
            result[name]["plan_s_unprofiled"] = evaluate.time_one_plan(model, plan_config)
            names.append(name)
    if not args.skip_train:
        profiling.describe_kernels(result["train_step"],
                                   setup.step_fn.lower(holder["state"], batch).compile().as_text())
    for name in names:
        result[name].pop("trace")
    metrics.write_json(common.result_path(args, "profile_lewm"), result)
    print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1))


if __name__ == "__main__":
    main()
