"""GPU benchmark: LeWM train steps/s at the paper's configuration (ViT-tiny/14 at 224 px, batch 128, bf16).

    python -m benchmarks.train_lewm [--steps 30] [--env tworoom]     # GPU
    python -m benchmarks.train_lewm --smoke                          # CPU check

Two figures from the same run: the train step alone on a fixed batch (model throughput), and the full step
including on-device clip generation and rendering (what training actually runs at). The trainer is
core.train.setup_training on papers.lewm's model and loss, as papers.lewm.train.train_lewm runs it.
"""

from __future__ import annotations

import json
import time

from benchmarks import common


def make_setup(config, seed: int = 0):
    """(TrainSetup, batch_at): a fresh LeWM's trainer (core.train.setup_training) and its step -> batch."""
    from flax import nnx

    from core import train
    from papers.lewm import data as lewm_data
    from papers.lewm import train as lewm_train
    from papers.lewm.model import LeWM

    model = LeWM(lewm_train.model_config(config), rngs=nnx.Rngs(seed))
    setup = train.setup_training(config, model, lewm_train.make_loss_fn(config), seed=seed)
    return setup, lewm_data.make_batch_fn(config)


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--env", default="tworoom", choices=("tworoom", "pusht", "reacher"))
    parser.add_argument("--image_size", type=int, default=0,
                        help="encoder input and rendering size (0: the config's 224, the paper's); a multiple of 14")
    args = parser.parse_args(argv)
    import jax

    from core import metrics, sharding
    from papers.lewm.model import param_count

    device = common.measure_device(args.smoke)
    common.print_device(device)
    steps = 2 if args.smoke else args.steps
    config = common.load_config(f"lewm/{args.env}", "smoke" if args.smoke else "",
                                f"image_size={args.image_size}" if args.image_size else "")
    setup, batch_at = make_setup(config)
    params = param_count(setup.model())       # before the first step donates the state
    state, step_fn, mesh = setup.state, setup.step_fn, setup.mesh

    def steps_per_s(fresh_batches: bool) -> float:
        nonlocal state
        batch = sharding.shard_batch(batch_at(0), mesh)
        next_batch = lambda i: sharding.shard_batch(batch_at(i), mesh) if fresh_batches else batch
        for i in range(2):   # compile + warm
            state, step_metrics = step_fn(state, next_batch(i))
        jax.block_until_ready(step_metrics["loss"])
        with common.no_compiles("train_lewm step"):
            t0 = time.perf_counter()
            for i in range(steps):
                state, step_metrics = step_fn(state, next_batch(i))
            jax.block_until_ready(step_metrics["loss"])
        return steps / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    jax.block_until_ready(batch_at(0))
    data_compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        batch = batch_at(i + 1)
    jax.block_until_ready(batch)
    data_batches_per_s = steps / (time.perf_counter() - t0)
    model_only = steps_per_s(False)
    with_data = steps_per_s(True)
    result = common.run_info(
        "train_lewm", args, device=device, config=config.to_dict(), env=args.env,
        params=params, batch_size=config.data.batch_size,
        image_size=config.model.image_size, compute_dtype=str(setup.compute_dtype),
        train_steps_per_s=with_data, train_steps_per_s_fixed_batch=model_only,
        data_batches_per_s=data_batches_per_s, data_compile_s=data_compile_s,
        frames_per_s_trained=with_data * config.data.batch_size * (config.model.history + 1))
    # another resolution is another model: its figure goes beside the paper-size one, not over it
    name = "train_lewm" if not args.image_size else f"train_lewm_{args.image_size}px"
    metrics.write_json(common.result_path(args, name), result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("config", "device")}, indent=1))


if __name__ == "__main__":
    main()
