"""GPU benchmark: LM training throughput (tokens/s, MFU) and validation loss per GPU-minute.

    python -m benchmarks.train_lm --draft_minutes 2 --target_minutes 3.5     # GPU
    python -m benchmarks.train_lm --draft_minutes 0 --target_minutes 0      # GPU, throughput / MFU only
    python -m benchmarks.train_lm --mesh fsdp --draft_minutes 0 --target_minutes 0 --profile   # 2 GPUs
    python -m benchmarks.train_lm --smoke                                    # CPU check

1. Throughput: the target and draft configs in bf16 on random tokens (compile excluded), through
   core.train.setup_training; MFU against both the bf16 matmul peak measured at the start
   (benchmarks.common.measure_device) and the device's spec, per device. The target is also timed with
   the plain (unchunked) cross-entropy and the other chunk-gradient mode, and, on several devices, on one
   device (the scaling). `--profile` records a profiler trace of a few target steps (kernel and
   collective shares in the JSON).
2. Learning speed: builds the offline corpus on the machine, trains the draft and then the target for a
   fixed wall-clock budget each (core.lm.train_lm), and records validation loss against GPU-minutes.
Writes benchmarks/results/train_lm.json and a loss-vs-minutes PNG.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from benchmarks import common


def flops_per_token(cfg, seq_len: int) -> float:
    """6N for the matmuls (embedding matrix counted once, it is the logit matmul) + attention scores."""
    from core.nn import transformer as tfm
    n_params = tfm.param_count(cfg)
    attention = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len / 2  # causal: half the scores
    return 6 * n_params + attention


def measure_throughput(config, steps: int, device: dict, devices=None, trace_dir: str = "") -> dict:
    """Seconds per train step of `config` on `devices` (default all, mesh from config.mesh) on random
    tokens; with `trace_dir`, also a profiler summary of a few steps."""
    import jax
    import numpy as np
    from flax import nnx

    from benchmarks import profiling
    from core import lm, sharding, train
    from core.nn import transformer as tfm

    cfg = lm.model_config(config)
    mesh = sharding.make_mesh(config.get("mesh"), devices)
    loss_fn = lm.make_next_token_loss(config.loss.chunk_length, config.loss.chunk_gradient)
    setup = train.setup_training(config, tfm.Transformer(cfg, rngs=nnx.Rngs(0)), loss_fn, mesh=mesh, seed=0)
    rng = np.random.default_rng(0)
    batch = {"tokens": rng.integers(0, cfg.vocab_size, (config.data.batch_size, config.data.seq_len + 1),
                                    dtype=np.int32)}
    batch = sharding.shard_batch(batch, setup.mesh)
    state = setup.state
    t0 = time.perf_counter()
    state, metrics = setup.step_fn(state, batch)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - t0
    state, metrics = setup.step_fn(state, batch)
    jax.block_until_ready(metrics["loss"])
    with common.no_compiles("train_lm step"):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, metrics = setup.step_fn(state, batch)
        jax.block_until_ready(metrics["loss"])
    step_s = (time.perf_counter() - t0) / steps
    tokens = config.data.batch_size * config.data.seq_len
    achieved = flops_per_token(cfg, config.data.seq_len) * tokens / step_s
    num_devices = setup.mesh.devices.size
    result = dict(params=tfm.param_count(cfg), batch_size=config.data.batch_size, seq_len=config.data.seq_len,
                  loss=config.loss.to_dict(), num_devices=num_devices,
                  mesh=dict(zip(setup.mesh.axis_names, setup.mesh.devices.shape)),
                  step_s=step_s, compile_s=compile_s, tokens_per_s=tokens / step_s,
                  achieved_tflops=achieved / 1e12,
                  mfu=common.against_device(achieved / num_devices, device, "flops"))
    if trace_dir:
        held = {"state": state}

        def one_step():           # the step donates its state: thread it through
            held["state"], step_metrics = setup.step_fn(held["state"], batch)
            return step_metrics["loss"]

        summary = profiling.device_summary(one_step, repeats=3, trace_dir=trace_dir, top=200)
        result["profile"] = dict(summary, top_kernels=summary["top_kernels"][:25],
                                 collectives=_collective_share(summary))
    return result


_COLLECTIVES = ("all-reduce", "all_reduce", "allreduce", "all-gather", "all_gather", "allgather",
                "reduce-scatter", "reduce_scatter", "reducescatter", "all-to-all", "collective-permute", "nccl")


def _collective_share(summary: dict) -> dict:
    """Per-call time of the communication kernels among the profiled kernels (the top 200 by time)."""
    by_kind = {}
    for kernel in summary["top_kernels"]:
        name = kernel["name"].lower()
        kind = next((c for c in _COLLECTIVES if c in name), None)
        if kind is not None:
            by_kind[kind] = by_kind.get(kind, 0.0) + kernel["us_per_call"]
    total = summary["kernel_us_per_call"]
    return dict(us_per_call=by_kind, share_of_kernel_time=sum(by_kind.values()) / total if total else 0.0)


def learning_curve(config, workdir: str, minutes: float, steps_per_s: float) -> dict:
    from core import config as config_lib
    from core import lm

    num_steps = max(20, int(minutes * 60 * steps_per_s))
    overrides = {"train.num_steps": num_steps, "optim.total_steps": num_steps,
                 "optim.warmup_steps": max(10, num_steps // 20), "train.eval_every": max(10, num_steps // 8),
                 "train.log_every": max(5, num_steps // 40), "train.checkpoint_every": num_steps * 10}
    config = config_lib.apply_overrides(config, overrides)
    t0 = time.perf_counter()
    result = lm.train_lm(config, workdir)
    evals = [r for r in result.history if "eval/loss" in r]
    return dict(num_steps=num_steps, wall_s=time.perf_counter() - t0,
                curve=[dict(minutes=r["wall_s"] / 60, step=r["step"], val_loss=r["eval/loss"],
                            val_perplexity=r["eval/perplexity"]) for r in evals],
                final_val_loss=evals[-1]["eval/loss"] if evals else None)


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--draft_minutes", type=float, default=2.0,
                        help="training budget of the draft config (0: throughput only)")
    parser.add_argument("--target_minutes", type=float, default=3.5,
                        help="training budget of the target config (0: throughput only)")
    parser.add_argument("--throughput_steps", type=int, default=10, help="timed steps of the MFU measurement")
    parser.add_argument("--batch_size", type=int, default=32,
                        help="sequences per step of the target (seq 1024) per device")
    parser.add_argument("--attention", default="cudnn", choices=("xla", "cudnn"), help="training attention")
    parser.add_argument("--mesh", default="data", choices=("data", "fsdp"),
                        help="how the devices share the step: data parallel, or fully sharded parameters")
    parser.add_argument("--loss_chunk", type=int, default=-1,
                        help="positions per chunk of the target's cross-entropy (0: plain; -1: the config's)")
    parser.add_argument("--loss_chunk_gradient", default="", choices=("", "forward", "recompute"),
                        help="how the chunked loss is differentiated (default: the config's)")
    parser.add_argument("--no_baselines", action="store_true",
                        help="skip the target's plain-loss, other chunk mode and one-device timings")
    parser.add_argument("--profile", action="store_true",
                        help="record a profiler trace of 3 target steps under <out>/train_lm_trace")
    parser.add_argument("--workdir", default="", help="scratch for the curves' checkpoints (default: a new temp "
                        "dir, so a rerun trains afresh)")
    args = parser.parse_args(argv)
    import jax

    from core import config as config_lib, metrics
    from core.data import corpus as corpus_lib

    device = common.measure_device(args.smoke)
    common.print_device(device)
    target = common.load_config("lm/target", "smoke" if args.smoke else "")
    draft = common.load_config("lm/draft", "smoke" if args.smoke else "")
    mesh = {"mesh.data": -1, "mesh.fsdp": 1} if args.mesh == "data" else {"mesh.data": 1, "mesh.fsdp": -1}
    overrides = dict(mesh, **({} if args.loss_chunk < 0 else {"loss.chunk_length": args.loss_chunk}),
                     **({"loss.chunk_gradient": args.loss_chunk_gradient} if args.loss_chunk_gradient else {}))
    if not args.smoke:
        overrides.update({"data.batch_size": args.batch_size * jax.device_count(),
                          "model.attention_impl": args.attention})
        draft = config_lib.apply_overrides(draft, {"model.attention_impl": args.attention})
    target = config_lib.apply_overrides(target, overrides)
    draft = config_lib.apply_overrides(draft, mesh)
    results = common.run_info("train_lm", args, device=device, config=dict(target=target.to_dict(), draft=draft.to_dict()))

    steps = 2 if args.smoke else args.throughput_steps
    trace_dir = os.path.join(args.out, common.result_name("train_lm_trace", args.smoke)) if args.profile else ""
    results["throughput_target"] = measure_throughput(target, steps, device, trace_dir=trace_dir)
    print(json.dumps({k: v for k, v in results["throughput_target"].items() if k != "profile"}, indent=1))
    if not args.no_baselines:
        if target.loss.chunk_length:        # the chunked loss against the plain one and the other gradient mode
            plain = config_lib.apply_overrides(target, {"loss.chunk_length": 0})
            results["throughput_target_plain_loss"] = measure_throughput(plain, steps, device)
            other = next(m for m in ("forward", "recompute") if m != target.loss.chunk_gradient)
            other_config = config_lib.apply_overrides(target, {"loss.chunk_gradient": other})
            results[f"throughput_target_chunk_{other}"] = measure_throughput(other_config, steps, device)
        if jax.device_count() > 1:
            one = config_lib.apply_overrides(target, {"data.batch_size": target.data.batch_size // jax.device_count()})
            results["throughput_target_one_device"] = measure_throughput(one, steps, device, jax.devices()[:1])
            results["scaling"] = dict(
                devices=jax.device_count(), mesh=args.mesh,
                tokens_per_s_ratio=(results["throughput_target"]["tokens_per_s"]
                                    / results["throughput_target_one_device"]["tokens_per_s"]))
    results["throughput_draft"] = measure_throughput(draft, steps, device)

    results["learning"] = {}
    budgets = {name: min(m, 0.01) if args.smoke else m             # smoke: the 20-step floor of learning_curve
               for name, m in (("draft", args.draft_minutes), ("target", args.target_minutes)) if m > 0}
    if budgets:
        t0 = time.perf_counter()
        manifest = corpus_lib.ensure_corpus(target.corpus, target.data.corpus_dir)
        results["corpus"] = dict(build_s=time.perf_counter() - t0, manifest=manifest)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_train_lm_")
    for name, config in (("draft", draft), ("target", target)):
        if name not in budgets:
            continue
        minutes = budgets[name]
        steps_per_s = 1.0 / results[f"throughput_{name}"]["step_s"]
        results["learning"][name] = learning_curve(config, os.path.join(workdir, name), minutes, steps_per_s)
        results["learning"][name]["config"] = config.to_dict()
        print(name, json.dumps(results["learning"][name]["curve"]))
    # The issue's figure: the target's model FLOP/s per device over the H200's bf16 spec peak.
    results["mfu"] = results["throughput_target"]["mfu"]["vs_spec"]
    results["mfu_vs_measured_peak"] = results["throughput_target"]["mfu"]["vs_measured"]

    metrics.write_json(common.result_path(args, "train_lm"), results)
    if results["learning"]:
        _plot(results, common.result_path(args, "train_lm", "png"))
    print(f"{'config':23} {'params':>12} {'tokens/s':>12} {'MFU meas.':>9} {'MFU spec':>8} {'final val loss':>15}")
    for key in ("draft", "target", "target_plain_loss", "target_chunk_forward", "target_chunk_recompute",
                "target_one_device"):
        if f"throughput_{key}" not in results:
            continue
        t = results[f"throughput_{key}"]
        spec = t["mfu"]["vs_spec"]
        print(f"{key:23} {t['params']:12,d} {t['tokens_per_s']:12,.0f} {t['mfu']['vs_measured']:9.3f} "
              f"{'-' if spec is None else f'{spec:.3f}':>8} {results['learning'].get(key, {}).get('final_val_loss')}")


def _plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, run in results["learning"].items():
        ax.plot([p["minutes"] for p in run["curve"]], [p["val_loss"] for p in run["curve"]], "o-", label=name)
    ax.set_xlabel("GPU minutes")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(results["device"]["name"])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
