"""GPU benchmark: autoregressive vs chain and tree speculative decoding, and the Hugging Face peer.

    python benchmarks/decode.py                 # H100: corpus, train target + draft, measure (one command)
    python benchmarks/decode.py --smoke         # CPU: tiny sizes, checks the script runs

1. Builds the offline corpus, trains the target through core.lm.train_lm and distils the draft from it
   (core.lm.distillation_loss through core.train), sizes in configs/ssd/decode.py.
2. Prompts are held-out (validation) corpus sequences. Measures tokens/s for AR, chain SD over K and tree SD
   at batch 1 and a batch sweep, T = 0 and T = 1; acceptance rate, tokens per target forward, c =
   t_draft/t_target (AR ms/token of each model alone), the best K, AR as a fraction of the HBM roofline, and
   the SD speedup over AR at T = 0, batch 1 (key `speedup`).
3. HF peer: exports both models with core.interop.hf_llama and times transformers' greedy AR with a static
   cache and assisted generation (`assistant_model`), checking that greedy outputs agree with ours.
Writes benchmarks/results/decode.json (device, versions, config, date) after every phase, so a run cut
short still leaves its figures.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes on CPU: checks the script runs.")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Directory for decode.json.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_decode", "Scratch directory (corpus, checkpoints).")
_SKIP_HF = flags.DEFINE_bool("skip_hf", False, "Skip the transformers peer.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Inference params and KV cache dtype.")

HBM_BYTES_PER_S = 2.9e12   # measured H100 device-to-device copy (notes/engineering.md)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


class Report:
    """The results dict, rewritten atomically after every phase."""

    def __init__(self, path: str, **fields):
        self.path, self.data = path, dict(fields)

    def update(self, **fields):
        self.data.update(fields)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=str)
        os.replace(tmp, self.path)


# ----------------------------------------------------------------------------------------------------------
# Training.

def train_models(config, workdir: str, report: Report):
    from flax import nnx

    from core import config as config_lib, lm, sharding, train
    from core.data import lm_pipeline, tokenizer as tokenizer_lib
    from core.nn import transformer as tfm

    t0 = time.perf_counter()
    target_result = lm.train_lm(config, os.path.join(workdir, "target"))
    target_s = time.perf_counter() - t0
    target = train.merge_model(target_result.graphdef, target_result.state)
    tokenizer = tokenizer_lib.load_tokenizer(config.data.corpus_dir)
    vocab = tokenizer.get_vocab_size()

    draft_config = config_lib.apply_overrides(config, {})
    draft_config.model = config.draft_model
    dt = config.draft_train
    draft_config.train.num_steps = dt.num_steps
    draft_config.optim.update(learning_rate=dt.learning_rate, warmup_steps=dt.warmup_steps, total_steps=dt.num_steps)
    teacher = train.merge_model(target_result.graphdef, target_result.state, dtype="bfloat16")
    draft_model = tfm.Transformer(lm.model_config(draft_config, vocab), rngs=nnx.Rngs(params=1))
    batches = lm_pipeline.make_lm_iterator(config.data.corpus_dir, "train", config.data.seq_len,
                                           config.data.batch_size, seed=config.train.data_seed + 1)
    t0 = time.perf_counter()
    draft_result = train.train(draft_config, os.path.join(workdir, "draft"), draft_model,
                               lm.distillation_loss(teacher, hard_weight=dt.hard_weight), batches,
                               mesh=sharding.make_mesh(config.get("mesh")))
    draft_s = time.perf_counter() - t0
    draft = train.merge_model(draft_result.graphdef, draft_result.state)
    val = lambda model: lm.evaluate(model, lm_pipeline.make_lm_iterator(
        config.data.corpus_dir, "validation", config.data.seq_len, config.data.batch_size, seed=0, num_epochs=1),
        config.eval.num_batches)["loss"]
    report.update(training=dict(
        target=dict(params=tfm.param_count(target.config), steps=config.train.num_steps, wall_s=target_s,
                    val_loss=val(target)),
        draft=dict(params=tfm.param_count(draft.config), steps=dt.num_steps, wall_s=draft_s, val_loss=val(draft)),
        vocab=vocab))
    return target, draft, tokenizer


def held_out_prompts(config, count: int, length: int):
    import numpy as np

    from core.data import lm_pipeline

    it = lm_pipeline.make_lm_iterator(config.data.corpus_dir, "validation", length, count, seed=0, num_epochs=1)
    return np.asarray(next(it)["tokens"][:, :length], np.int32)


# ----------------------------------------------------------------------------------------------------------
# Decoding.

def inference_split(model, dtype):
    """(graphdef, state) with floating params cast once to `dtype`."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, state = nnx.split(model)
    cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return graphdef, jax.tree.map(cast, state)


def run_decode(models, config, prompt_sets, repeats: int, seed: int = 0, dtype=None) -> dict:
    """Compiles once, then times `repeats` passes over `prompt_sets` (each a [b, L] batch, one call each)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from papers.ssd import engine

    (tg, ts, tcfg), (dg, ds, dcfg) = models
    speculative = config.mode != "ar"
    generate = engine.make_generate(tg, dg if speculative else None, config)
    batch, length = prompt_sets[0].shape
    lengths = jnp.full((batch,), length, jnp.int32)
    caches = engine.init_caches(tcfg, dcfg, config, batch, length, dtype)
    t0 = time.perf_counter()
    result, *caches = generate(ts, ds, *caches, jnp.asarray(prompt_sets[0]), lengths, jax.random.key(seed))
    jax.block_until_ready(result)
    compile_s = time.perf_counter() - t0
    tokens, rounds, accepted, wall, outputs = 0, 0, 0, 0.0, []
    for rep in range(repeats):
        for i, prompts in enumerate(prompt_sets):
            key = jax.random.key(seed + 1 + rep * len(prompt_sets) + i)
            t0 = time.perf_counter()
            result, *caches = generate(ts, ds, *caches, jnp.asarray(prompts), lengths, key)
            jax.block_until_ready(result)
            wall += time.perf_counter() - t0
            tokens += int(result.num_tokens.sum())
            rounds += int(result.rounds.sum())
            accepted += int(result.accepted.sum())
            if rep == repeats - 1:
                outputs.append(np.asarray(result.tokens))
    calls = repeats * len(prompt_sets)
    per_round = config.tokens_per_round - 1
    out = dict(mode=config.mode, batch=batch, temperature=config.temperature, compile_s=compile_s,
               tokens_per_s=tokens / wall, ms_per_token_per_seq=1e3 * wall * batch / tokens,
               tokens_per_step=(tokens - batch * calls) / max(rounds, 1), calls=calls)
    if speculative:
        out.update(acceptance=accepted / max(rounds * per_round, 1), draft_len=per_round)
    out["last_tokens"] = np.concatenate(outputs)
    return out


def decode_sweep(target, draft, prompts, dc, report: Report) -> dict:
    import jax.numpy as jnp

    from papers.ssd import engine, tree as tree_lib

    dtype = jnp.dtype(_DTYPE.value)
    tg, ts = inference_split(target, dtype)
    dg, ds = inference_split(draft, dtype)
    models = ((tg, ts, target.config), (dg, ds, draft.config))
    draft_as_target = ((dg, ds, draft.config), (dg, ds, draft.config))
    rows, outputs = [], {}
    tree = tree_lib.tree_from_branching(tuple(dc.tree_branching))

    def record(name, models, config, batch):
        sets = ([prompts[i:i + 1] for i in range(dc.batch1_prompts)] if batch == 1 else [prompts[:batch]])
        row = run_decode(models, config, sets, dc.repeats, dtype=dtype)
        outputs[name] = row.pop("last_tokens")
        row["name"] = name
        rows.append(row)
        print(f"{name:28s} b={batch:3d} T={config.temperature:.1f} {row['tokens_per_s']:9.1f} tok/s "
              f"{row['tokens_per_step']:.2f} tok/step acc={row.get('acceptance', float('nan')):.3f} "
              f"(compile {row['compile_s']:.0f}s)", flush=True)
        report.update(decode=rows)
        return row

    max_new = dc.max_new_tokens
    ar = lambda t: engine.DecodeConfig("ar", max_new, temperature=t)
    chain = lambda k, t: engine.DecodeConfig("chain", max_new, num_draft=k, temperature=t)
    tree_cfg = lambda t: engine.DecodeConfig("tree", max_new, tree=tree, temperature=t,
                                             tree_children="topk" if t == 0 else "sample")
    ar1 = record("ar_T0_b1", models, ar(0.0), 1)
    draft_ar = record("draft_ar_T0_b1", draft_as_target, ar(0.0), 1)
    c = ar1["tokens_per_s"] / draft_ar["tokens_per_s"]
    chain_rows = {k: record(f"chain_K{k}_T0_b1", models, chain(k, 0.0), 1) for k in dc.ks}
    best_k = max(chain_rows, key=lambda k: chain_rows[k]["tokens_per_s"])
    tree1 = record("tree_T0_b1", models, tree_cfg(0.0), 1)
    ar1_t1 = record("ar_T1_b1", models, ar(1.0), 1)
    chain1_t1 = record(f"chain_K{best_k}_T1_b1", models, chain(best_k, 1.0), 1)
    tree1_t1 = record("tree_T1_b1", models, tree_cfg(1.0), 1)
    sweep = {}
    for batch in dc.batches:
        if batch == 1 or batch > len(prompts):
            continue
        sweep[batch] = dict(ar=record(f"ar_T0_b{batch}", models, ar(0.0), batch)["tokens_per_s"],
                            chain=record(f"chain_K{best_k}_T0_b{batch}", models, chain(best_k, 0.0), batch)
                            ["tokens_per_s"])
    sweep[1] = dict(ar=ar1["tokens_per_s"], chain=chain_rows[best_k]["tokens_per_s"])

    identical = {name: float((outputs[name] == outputs["ar_T0_b1"]).all(-1).mean())
                 for name in outputs if "_T0_b1" in name and not name.startswith("draft")}
    divergences = near_tie_gaps(target, prompts[:dc.batch1_prompts], outputs)
    weight_bytes = sum(x.size * x.dtype.itemsize for x in __import__("jax").tree.leaves(ts))
    roofline_s = weight_bytes / HBM_BYTES_PER_S
    summary = dict(
        c=c, best_k=best_k, speedup=chain_rows[best_k]["tokens_per_s"] / ar1["tokens_per_s"],
        tree_speedup=tree1["tokens_per_s"] / ar1["tokens_per_s"],
        speedup_T1=chain1_t1["tokens_per_s"] / ar1_t1["tokens_per_s"],
        tree_speedup_T1=tree1_t1["tokens_per_s"] / ar1_t1["tokens_per_s"],
        acceptance_T0=chain_rows[best_k]["acceptance"], acceptance_T1=chain1_t1["acceptance"],
        tokens_per_step_T0=chain_rows[best_k]["tokens_per_step"], tree_tokens_per_step_T0=tree1["tokens_per_step"],
        roofline=roofline_s / (ar1["ms_per_token_per_seq"] / 1e3), target_weight_bytes=weight_bytes,
        greedy_identical_to_ar=identical, greedy_divergences=divergences, batch_sweep_tokens_per_s=sweep)
    report.update(decode=rows, **summary)
    return dict(summary, outputs=outputs)


def near_tie_gaps(target, prompts, outputs) -> list[dict]:
    """For every greedy SD output that differs from greedy AR: the first differing step and the f32 target's
    logit gap there between the two tokens (a near-tie means bf16 rounding, a large gap a bug)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    graphdef, state = nnx.split(target)
    forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens)[0, -1].astype(jnp.float32))
    reference = outputs["ar_T0_b1"]
    found = []
    for name, tokens in outputs.items():
        if "_T0_b1" not in name or name.startswith(("ar", "draft")):
            continue
        for row in np.flatnonzero((tokens != reference).any(-1)):
            step = int(np.argmax(tokens[row] != reference[row]))
            logits = np.asarray(forward(state, jnp.asarray(np.concatenate([prompts[row], reference[row, :step]])[None])))
            found.append(dict(run=name, prompt=int(row), step=step, ar_token=int(reference[row, step]),
                              sd_token=int(tokens[row, step]),
                              logit_gap=float(logits[reference[row, step]] - logits[tokens[row, step]]),
                              top2_gap=float(np.diff(np.sort(logits)[-2:])[0])))
    return found


# ----------------------------------------------------------------------------------------------------------
# The Hugging Face peer.

def hf_peer(target, draft, prompts, ours_greedy, hc, workdir: str, report: Report):
    import numpy as np
    import torch
    import transformers

    from core.interop import hf_llama

    paths = {}
    for name, model in (("target", target), ("draft", draft)):
        paths[name] = os.path.join(workdir, f"hf_{name}")
        hf_llama.export(model, paths[name])
    load = lambda p: transformers.LlamaForCausalLM.from_pretrained(p, torch_dtype=torch.bfloat16).cuda().eval()
    hf_target, hf_draft = load(paths["target"]), load(paths["draft"])
    prompts = prompts[:hc.num_prompts]
    new = hc.max_new_tokens

    def time_generate(**kwargs):
        outs, wall, tokens = [], 0.0, 0
        for prompt in prompts:
            ids = torch.tensor(prompt[None], device="cuda")
            hf_target.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, **kwargs)  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = hf_target.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, **kwargs)
            torch.cuda.synchronize()
            wall += time.perf_counter() - t0
            outs.append(out[0, ids.shape[1]:].cpu().numpy())
            tokens += outs[-1].size
        return tokens / wall, np.stack(outs)

    with torch.inference_mode():
        ar_tps, ar_out = time_generate(cache_implementation="static")
        assisted_tps, assisted_out = time_generate(assistant_model=hf_draft)
    ours = ours_greedy[:len(prompts), :new]
    report.update(hf=dict(
        transformers=transformers.__version__, torch=torch.__version__,
        hf_ar_tokens_per_s=ar_tps, hf_assisted_tokens_per_s=assisted_tps,
        hf_assisted_speedup=assisted_tps / ar_tps,
        hf_greedy_identical_to_ours=float((ar_out == ours).all(-1).mean()),
        hf_greedy_first_divergence=[int(np.argmax(a != b)) if (a != b).any() else -1 for a, b in zip(ar_out, ours)],
        hf_assisted_identical_to_hf_ar=float((assisted_out == ar_out).all(-1).mean()),
        batch=1, max_new_tokens=new, num_prompts=len(prompts)))


def main(argv):
    del argv
    import flax
    import jax

    from core import config as config_lib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = config_lib.load_config(os.path.join(root, "configs/ssd/decode.py") + (":smoke" if _SMOKE.value else ""))
    name = "decode_smoke" if _SMOKE.value else "decode"
    report = Report(os.path.join(_OUT.value, f"{name}.json"), benchmark="decode", date=now(),
                    device=jax.devices()[0].device_kind, versions=dict(jax=jax.__version__, flax=flax.__version__),
                    command="python benchmarks/decode.py " + " ".join(sys.argv[1:]), config=config.to_dict())
    t_start = time.perf_counter()
    target, draft, _ = train_models(config, _WORKDIR.value, report)
    dc = config.decode
    prompts = held_out_prompts(config, max(dc.num_prompts, max(dc.batches)), dc.prompt_len)
    summary = decode_sweep(target, draft, prompts, dc, report)
    print(json.dumps({k: v for k, v in summary.items() if k != "outputs"}, indent=1, default=str), flush=True)
    if config.hf.enabled and not _SKIP_HF.value:
        try:
            hf_peer(target, draft, prompts, summary["outputs"]["ar_T0_b1"], config.hf, _WORKDIR.value, report)
        except Exception as e:  # the peer is a comparison; its failure must not hide our figures
            report.update(hf=dict(error=f"{type(e).__name__}: {e}"))
        print(json.dumps(report.data.get("hf"), indent=1, default=str), flush=True)
    report.update(total_wall_s=time.perf_counter() - t_start)


if __name__ == "__main__":
    app.run(main)
