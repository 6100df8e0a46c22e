"""GPU benchmark: LM training throughput (tokens/s, MFU) and validation loss per GPU-minute.

    python benchmarks/train_lm.py --draft_minutes 2 --target_minutes 3.5

1. Throughput: the target config in bf16 on random tokens (compile excluded), MFU against the H100 SXM
   dense bf16 peak (989 TFLOP/s spec; also reported against the 786 TFLOP/s matmul measured on this GPU).
2. Learning speed: builds the offline corpus on the machine, trains the draft and then the target for a
   fixed wall-clock budget each, and records validation loss against GPU-minutes.
Writes benchmarks/results/train_lm.json (device, versions, config, date) and a loss-vs-minutes PNG.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_DRAFT_MINUTES = flags.DEFINE_float("draft_minutes", 2.0, "Training budget for the draft config.")
_TARGET_MINUTES = flags.DEFINE_float("target_minutes", 3.5, "Training budget for the target config.")
_THROUGHPUT_STEPS = flags.DEFINE_integer("throughput_steps", 10, "Timed steps for the MFU measurement.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Sequences per step for the target (seq_len 1024).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Where the JSON and PNG go.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes, CPU: checks the script runs.")
_ATTENTION = flags.DEFINE_string("attention", "cudnn", "Training attention implementation (xla or cudnn).")

H100_PEAK_BF16 = 989e12
H100_MEASURED_MATMUL = 786e12


def flops_per_token(cfg, seq_len: int) -> float:
    """6N for the matmuls (embedding matrix counted once, it is the logit matmul) + attention scores."""
    from core.nn import transformer as tfm
    n_params = tfm.param_count(cfg)
    attention = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len / 2  # causal: half the scores
    return 6 * n_params + attention


def measure_throughput(config, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from core import lm, sharding, train
    from core.nn import transformer as tfm

    cfg = lm.model_config(config)
    mesh = sharding.make_mesh(config.mesh)
    optimizer = train.make_optimizer(config.optim)
    graphdef, state = train.init_train_state(tfm.Transformer(cfg, rngs=nnx.Rngs(0)), optimizer,
                                             jax.random.key(0), mesh)
    step_fn = train.make_train_step(graphdef, lm.next_token_loss, optimizer, jnp.bfloat16)
    rng = np.random.default_rng(0)
    batch = {"tokens": rng.integers(0, cfg.vocab_size, (config.data.batch_size, config.data.seq_len + 1),
                                    dtype=np.int32)}
    batch = sharding.shard_batch(batch, mesh)
    t0 = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - t0
    state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics["loss"])
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics["loss"])
    step_s = (time.perf_counter() - t0) / steps
    tokens = config.data.batch_size * config.data.seq_len
    achieved = flops_per_token(cfg, config.data.seq_len) * tokens / step_s
    return dict(params=tfm.param_count(cfg), batch_size=config.data.batch_size, seq_len=config.data.seq_len,
                step_s=step_s, compile_s=compile_s, tokens_per_s=tokens / step_s,
                achieved_tflops=achieved / 1e12, mfu=achieved / H100_PEAK_BF16,
                mfu_vs_measured_matmul=achieved / H100_MEASURED_MATMUL)


def learning_curve(config, workdir: str, minutes: float, steps_per_s: float) -> dict:
    from core import config as config_lib
    from core import lm

    num_steps = max(20, int(minutes * 60 * steps_per_s))
    overrides = {"train.num_steps": num_steps, "optim.total_steps": num_steps,
                 "optim.warmup_steps": max(10, num_steps // 20), "train.eval_every": max(10, num_steps // 8),
                 "train.log_every": max(5, num_steps // 40), "train.checkpoint_every": num_steps * 10}
    config = config_lib.apply_overrides(config, overrides)
    config.unlock() if hasattr(config, "unlock") else None
    t0 = time.perf_counter()
    result = lm.train_lm(config, workdir)
    evals = [r for r in result.history if "eval/loss" in r]
    samples = ""
    return dict(num_steps=num_steps, wall_s=time.perf_counter() - t0,
                curve=[dict(minutes=r["wall_s"] / 60, step=r["step"], val_loss=r["eval/loss"],
                            val_perplexity=r["eval/perplexity"]) for r in evals],
                final_val_loss=evals[-1]["eval/loss"], sample=samples)


def main(argv):
    del argv
    from core import config as config_lib, metrics
    from core.data import corpus as corpus_lib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    arg = ":smoke" if _SMOKE.value else ""
    target = config_lib.load_config(os.path.join(root, "configs/lm/target.py") + arg)
    draft = config_lib.load_config(os.path.join(root, "configs/lm/draft.py") + arg)
    if not _SMOKE.value:
        target = config_lib.apply_overrides(target, {"data.batch_size": _BATCH.value,
                                                     "model.attention_impl": _ATTENTION.value})
        draft = config_lib.apply_overrides(draft, {"model.attention_impl": _ATTENTION.value})
    results = metrics.run_info("train_lm", peak_flops=H100_PEAK_BF16)

    t0 = time.perf_counter()
    corpus_dir = target.data.corpus_dir
    manifest = corpus_lib.ensure_corpus(target.data.corpus, corpus_dir)
    results["corpus"] = dict(build_s=time.perf_counter() - t0, manifest=manifest)

    results["throughput_target"] = measure_throughput(target, _THROUGHPUT_STEPS.value)
    print(json.dumps(results["throughput_target"], indent=1))
    results["throughput_draft"] = measure_throughput(draft, _THROUGHPUT_STEPS.value)

    workdir = "/tmp/bench_train_lm"
    results["learning"] = {}
    for name, config, minutes in (("draft", draft, _DRAFT_MINUTES.value), ("target", target, _TARGET_MINUTES.value)):
        steps_per_s = 1.0 / results[f"throughput_{name}"]["step_s"]
        results["learning"][name] = learning_curve(config, os.path.join(workdir, name), minutes, steps_per_s)
        results["learning"][name]["config"] = config.to_dict()
        print(name, json.dumps(results["learning"][name]["curve"]))
    results["mfu"] = results["throughput_target"]["mfu"]

    name = "train_lm_smoke" if _SMOKE.value else "train_lm"
    metrics.write_json(os.path.join(_OUT.value, f"{name}.json"), results)
    _plot(results, os.path.join(_OUT.value, f"{name}.png"))
    print(f"{'config':8} {'params':>12} {'tokens/s':>12} {'MFU':>6} {'final val loss':>15}")
    for key in ("draft", "target"):
        t = results[f"throughput_{key}"]
        print(f"{key:8} {t['params']:12,d} {t['tokens_per_s']:12,.0f} {t['mfu']:6.3f} "
              f"{results['learning'][key]['final_val_loss']:15.3f}")


def _plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, run in results["learning"].items():
        ax.plot([p["minutes"] for p in run["curve"]], [p["val_loss"] for p in run["curve"]], "o-", label=name)
    ax.set_xlabel("GPU minutes")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(results["device"])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    app.run(main)
