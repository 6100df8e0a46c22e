"""GPU benchmark: autoregressive vs chain and tree speculative decoding, and the Hugging Face peer.

    python -m benchmarks.decode                 # GPU: corpus, train target + draft, measure (one command)
    python -m benchmarks.decode --quick         # GPU: the ~2-minute variant (configs/ssd/decode.py:quick)
    python -m benchmarks.decode --smoke         # CPU: tiny sizes, checks the script runs
    python -m benchmarks.decode --workdir W --skip_hf --budget_s 470   # split run, command 1: train + sweep
    python -m benchmarks.decode --workdir W --hf_only                  # command 2: our AR + the HF peer, merged
    python -m benchmarks.decode --workdir W --invariant_only           # invariant numerics phase only, merged

Training resumes from --workdir's checkpoints (papers.ssd.pair), so on a warm GPU machine a second command
(e.g. after the 10-minute limit) skips straight to decoding and reports the first run's training figures.

1. Builds the offline corpus, trains the target and distils the draft from it (papers.ssd.pair.train_pair),
   sizes in configs/ssd/decode.py.
2. Prompts are held-out (validation) corpus sequences. Measures tokens/s for AR, chain SD over K and tree SD
   at batch 1 and a batch sweep, T = 0 and T = 1; acceptance rate, tokens per target forward, c =
   t_draft/t_target (AR ms/token of each model alone), the best K, AR against the streaming bandwidth
   (measured at the start and spec; key `roofline`), and the SD speedup over AR at T = 0, batch 1 (`speedup`).
3. HF peer (benchmarks/hf_peer.py): exports both models with core.interop.hf_llama and times transformers'
   greedy AR with its static cache compiled by torch.compile (its default, the fair peer) at batch 1 and 8,
   and assisted generation with our draft, warm-up excluded; `ours_over_hf_compiled` = our AR tokens/s over
   that at batch 1 (`_by_batch` for each). The uncompiled static cache is kept as a labelled extra.
   `ms_per_round` per row is wall / while-loop iterations (the slowest row sets the iterations).
4. Bit-identical greedy decoding in bf16 (`invariant_numerics`, `greedy_identical_bf16`): the target with
   core.nn.transformer's numerics="invariant" (decode and verify reduce in one order) and in the default mode,
   greedy AR / chain / tree over all prompts in one batch: the fraction of SD sequences equal to AR in each
   mode, and tokens/s of both modes (that batch, and AR / chain at batch 1) as the invariant mode's cost.
   Alone on a warm machine: `python -m benchmarks.decode --workdir W --invariant_only` (merged into the JSON).
5. Curves: decode_batch.png (tokens/s vs batch 1..32: AR, chain, tree; --extra_batches adds points) and
   decode_k.png (tokens/s vs K, chain SD, batch 1), drawn from the JSON's rows at the end of every run.
Writes benchmarks/results/decode.json after every phase, so a run cut short still leaves its figures.
"""

from __future__ import annotations

import json
import os
import time

from benchmarks import common


# ----------------------------------------------------------------------------------------------------------
# Training.

def train_models(config, workdir: str, report: common.Report):
    """The target and its distilled draft (papers.ssd.pair), resumed from workdir; figures into the report."""
    from core.data import corpus as corpus_lib
    from papers.ssd import pair

    draft_config = pair.draft_config(config, config.draft_model, **config.draft_train)
    target, draft = pair.train_pair(config, draft_config, workdir)
    manifest = corpus_lib.load_manifest(config.data.corpus_dir)
    report.update(corpus=dict(splits=manifest["splits"], sha256=manifest["content_sha256"]),
                  training=dict(pair.read_summary(workdir), vocab=target.config.vocab_size, workdir=workdir))
    return target, draft


def held_out_prompts(config, count: int, length: int):
    import numpy as np

    from core.data import lm_pipeline

    it = lm_pipeline.make_lm_iterator(config.data.corpus_dir, "validation", length, count, seed=0, num_epochs=1)
    return np.asarray(next(it)["tokens"][:, :length], np.int32)


# ----------------------------------------------------------------------------------------------------------
# Decoding.

def inference_split(model, dtype, **config_overrides):
    """(graphdef, state) with floating params cast once to `dtype`, on one device with no mesh in their types
    (core.sharding.to_single_device: else handed-back caches are typed with the training mesh and every
    call after the first recompiles), with the graph of a freshly built model (its config with
    `config_overrides`, e.g. numerics="invariant")."""
    import dataclasses

    import jax
    from flax import nnx

    from core import precision, sharding
    from core.nn import transformer as tfm

    config = dataclasses.replace(model.config, **config_overrides)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: tfm.Transformer(config, rngs=nnx.Rngs(0))))
    _, state = nnx.split(model)
    values = sharding.to_single_device(precision.cast_floating(jax.tree.leaves(state), dtype))
    return graphdef, jax.tree.unflatten(jax.tree.structure(abstract), values)


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
    # Committed to the device like the caches handed back, so the first call's compile serves every call.
    caches = jax.device_put(engine.init_caches(tcfg, dcfg, config, batch, length, dtype), jax.devices()[0])
    t0 = time.perf_counter()
    result, *caches = generate(ts, ds, *caches, jnp.asarray(prompt_sets[0]), lengths, jax.random.key(seed))
    jax.block_until_ready(result)
    compile_s = time.perf_counter() - t0
    tokens, rounds, accepted, iterations, wall, outputs = 0, 0, 0, 0, 0.0, []
    # A compile inside the timed calls would make the figures meaningless: no_compiles raises.
    with common.no_compiles(config.mode):
        for rep in range(repeats):
            for i, prompts in enumerate(prompt_sets):
                key = jax.random.key(seed + 1 + rep * len(prompt_sets) + i)
                t0 = time.perf_counter()
                result, *caches = generate(ts, ds, *caches, jnp.asarray(prompts), lengths, key)
                jax.block_until_ready(result)
                wall += time.perf_counter() - t0
                tokens += int(np.asarray(result.num_tokens).sum())
                rounds += int(np.asarray(result.rounds).sum())
                iterations += int(np.asarray(result.rounds).max())   # the while loop runs until the last row is done
                accepted += int(np.asarray(result.accepted).sum())
                if rep == repeats - 1:
                    outputs.append(np.asarray(result.tokens))
    calls = repeats * len(prompt_sets)
    per_round = config.tokens_per_round - 1
    out = dict(mode=config.mode, batch=batch, temperature=config.temperature, compile_s=compile_s,
               tokens_per_s=tokens / wall, ms_per_token_per_seq=1e3 * wall * batch / tokens,
               tokens_per_step=(tokens - batch * calls) / max(rounds, 1), calls=calls,
               ms_per_round=1e3 * wall / max(iterations, 1), loop_iterations_per_call=iterations / calls)
    if speculative:
        out.update(acceptance=accepted / max(rounds * per_round, 1), draft_len=per_round)
    out["last_tokens"] = np.concatenate(outputs)
    return out


class Sweep:
    """Runs named decode configs in priority order, skipping any that would start after the deadline."""

    def __init__(self, target, draft, prompts, dc, report: common.Report, deadline: float, dtype: str, device: dict):
        import jax.numpy as jnp

        dtype = jnp.dtype(dtype)
        tg, ts = inference_split(target, dtype)
        dg, ds = inference_split(draft, dtype)
        self.models = ((tg, ts, target.config), (dg, ds, draft.config))
        self.draft_alone = ((dg, ds, draft.config), (dg, ds, draft.config))
        self.target_state, self.dtype = ts, dtype
        self.prompts, self.dc, self.report, self.deadline, self.device = prompts, dc, report, deadline, device
        self.rows, self.outputs, self.skipped = {}, {}, []
        self.hf_batches = ()
        self.extra_batches = ()       # batch-sweep points after the config's (curve points, lowest priority)
        self.rows_key = "decode"      # the report key the rows are written under

    def record(self, name, config, batch, draft_alone=False):
        if name in self.rows:     # measured earlier (e.g. AR at the peer's batch sizes)
            return self.rows[name]
        if time.perf_counter() > self.deadline:
            self.skipped.append(name)
            self.report.update(skipped=self.skipped)
            return None
        sets = ([self.prompts[i:i + 1] for i in range(self.dc.batch1_prompts)] if batch == 1
                else [self.prompts[:batch]])
        row = run_decode(self.draft_alone if draft_alone else self.models, config, sets, self.dc.repeats,
                         dtype=self.dtype)
        self.outputs[name] = row.pop("last_tokens")
        self.rows[name] = dict(row, name=name)
        print(f"{name:22s} b={batch:3d} T={config.temperature:.1f} {row['tokens_per_s']:9.1f} tok/s "
              f"{row['tokens_per_step']:.2f} tok/step acc={row.get('acceptance', float('nan')):.3f} "
              f"(compile {row['compile_s']:.0f}s)", flush=True)
        self.report.update(**{self.rows_key: list(self.rows.values())})
        return self.rows[name]


def decode_phases(sweep: Sweep, hf_fn=None):
    """Priority order: the batch-1 T=0 headline (AR, draft alone, chain, tree), the HF peer, T=1, the K
    sweep, then the batch sweep."""
    from papers.ssd import engine, tree as tree_lib

    dc = sweep.dc
    new = dc.max_new_tokens
    tree = tree_lib.tree_from_branching(tuple(dc.tree_branching))
    ar = lambda t: engine.DecodeConfig("ar", new, temperature=t)
    chain = lambda k, t: engine.DecodeConfig("chain", new, num_draft=k, temperature=t)
    tree_cfg = lambda t: engine.DecodeConfig("tree", new, tree=tree, temperature=t,
                                             tree_children="topk" if t == 0 else "sample")
    ks = list(dc.ks)
    first_k = ks[len(ks) // 2]
    sweep.record("ar_T0_b1", ar(0.0), 1)
    sweep.record("draft_ar_T0_b1", ar(0.0), 1, draft_alone=True)
    sweep.record(f"chain_K{first_k}_T0_b1", chain(first_k, 0.0), 1)
    sweep.record("tree_T0_b1", tree_cfg(0.0), 1)
    summarize(sweep)
    scan_ar_diagnostic(sweep)
    if hf_fn is not None:
        peer_phase(sweep, hf_fn)
        summarize(sweep)
    best_k = lambda: max((k for k in ks if f"chain_K{k}_T0_b1" in sweep.rows),
                         key=lambda k: sweep.rows[f"chain_K{k}_T0_b1"]["tokens_per_s"])
    sweep.record("ar_T1_b1", ar(1.0), 1)
    sweep.record(f"chain_K{first_k}_T1_b1", chain(first_k, 1.0), 1)
    sweep.record("tree_T1_b1", tree_cfg(1.0), 1)
    summarize(sweep)
    for k in ks:
        if k != first_k:
            sweep.record(f"chain_K{k}_T0_b1", chain(k, 0.0), 1)
    summarize(sweep)
    for batch in tuple(dc.batches) + tuple(b for b in sweep.extra_batches if b not in dc.batches):
        if 1 < batch <= len(sweep.prompts):
            sweep.record(f"ar_T0_b{batch}", ar(0.0), batch)
            if any(f"chain_K{k}_T0_b1" in sweep.rows for k in ks):
                sweep.record(f"chain_K{best_k()}_T0_b{batch}", chain(best_k(), 0.0), batch)
            sweep.record(f"tree_T0_b{batch}", tree_cfg(0.0), batch)
    return summarize(sweep)


def peer_phase(sweep: Sweep, hf_fn) -> None:
    """Our greedy AR at every batch the HF peer runs (hc.batches), then the peer."""
    from papers.ssd import engine

    for batch in sweep.hf_batches:
        if batch <= len(sweep.prompts):
            sweep.record(f"ar_T0_b{batch}", engine.DecodeConfig("ar", sweep.dc.max_new_tokens), batch)
    if "ar_T0_b1" in sweep.outputs:
        hf_fn({1: sweep.outputs["ar_T0_b1"]})


def scan_ar_diagnostic(sweep: Sweep) -> None:
    """Greedy AR through core.lm's fixed-length lax.scan loop, to tell engine (while_loop) overhead from
    model/kernel time: ms/token at batch 1 on the same prompts and dtype."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from core import lm

    if time.perf_counter() > sweep.deadline:
        return
    (tg, ts, tcfg), _ = sweep.models
    model = nnx.merge(tg, ts)
    new = sweep.dc.max_new_tokens
    prompt = jnp.asarray(sweep.prompts[:1])
    out = lm.generate(model, prompt, new, jax.random.key(0), 0.0, sweep.dtype)
    jax.block_until_ready(out)
    count = min(4, sweep.dc.batch1_prompts)
    t0 = time.perf_counter()
    for i in range(count):
        out = lm.generate(model, jnp.asarray(sweep.prompts[i:i + 1]), new, jax.random.key(0), 0.0, sweep.dtype)
        jax.block_until_ready(out)
    ms = 1e3 * (time.perf_counter() - t0) / (count * new)
    same = bool((jax.device_get(out)[0] == sweep.outputs["ar_T0_b1"][count - 1]).all()) if "ar_T0_b1" in sweep.outputs else None
    sweep.report.update(scan_ar=dict(ms_per_token=ms, tokens_per_s=1e3 / ms, matches_engine_ar=same))
    print(f"core.lm.generate (lax.scan) AR: {ms:.3f} ms/token, matches engine AR: {same}", flush=True)


def greedy_ar_reference(name: str, outputs: dict):
    """Greedy AR's tokens at the batch size of greedy SD run `name`; None for AR / draft / T > 0 runs."""
    if "_T0_" not in name or name.startswith(("ar", "draft")):
        return None
    return outputs.get("ar_T0_" + name.split("_T0_")[-1])


def summarize(sweep: Sweep) -> dict:
    import jax

    rows = sweep.rows
    get = lambda name, key="tokens_per_s": rows[name][key] if name in rows else None
    ratio = lambda a, b: a / b if a is not None and b else None
    chains = {int(n.split("_")[1][1:]): r for n, r in rows.items() if n.startswith("chain") and n.endswith("_T0_b1")}
    best_k = max(chains, key=lambda k: chains[k]["tokens_per_s"]) if chains else None
    chain_t1 = next((r for n, r in rows.items() if n.startswith("chain") and n.endswith("_T1_b1")), None)
    weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(sweep.target_state))
    ar_s = get("ar_T0_b1", "ms_per_token_per_seq")
    identical = {n: float((o == greedy_ar_reference(n, sweep.outputs)).all(-1).mean())   # every batch size
                 for n, o in sweep.outputs.items() if greedy_ar_reference(n, sweep.outputs) is not None}
    batch_sweep = {}
    for name, row in rows.items():
        if row["temperature"] == 0 and not name.startswith("draft"):
            batch_sweep.setdefault(row["batch"], {})[row["mode"] if row["mode"] != "chain" else name.split("_T")[0]] = \
                row["tokens_per_s"]
    summary = dict(
        c=ratio(get("ar_T0_b1"), get("draft_ar_T0_b1")), best_k=best_k,
        speedup=ratio(chains[best_k]["tokens_per_s"], get("ar_T0_b1")) if chains else None,
        tree_speedup=ratio(get("tree_T0_b1"), get("ar_T0_b1")),
        speedup_T1=ratio(chain_t1["tokens_per_s"], get("ar_T1_b1")) if chain_t1 else None,
        tree_speedup_T1=ratio(get("tree_T1_b1"), get("ar_T1_b1")),
        acceptance_T0=chains[best_k]["acceptance"] if chains else None,
        acceptance_T1=chain_t1["acceptance"] if chain_t1 else None,
        tokens_per_step_T0=chains[best_k]["tokens_per_step"] if chains else None,
        tree_tokens_per_step_T0=get("tree_T0_b1", "tokens_per_step"),
        tree_acceptance_T0=get("tree_T0_b1", "acceptance"),
        roofline=common.against_device(weight_bytes / (ar_s / 1e3), sweep.device, "bytes") if ar_s else None,
        target_weight_bytes=weight_bytes,
        greedy_identical_to_ar=identical, batch_sweep_tokens_per_s=batch_sweep,
        ms_per_round_by_batch={name: row["ms_per_round"] for name, row in rows.items() if row["temperature"] == 0},
        **peer_ratios(rows, sweep.report.data.get("hf")))
    sweep.report.update(**summary)
    return summary


# ----------------------------------------------------------------------------------------------------------
# The Hugging Face peer.

def hf_peer(target, draft, prompts, ours_greedy: dict, hc, workdir: str, report: common.Report,
            rows: dict | None = None) -> None:
    """Exports both models (core.interop.hf_llama) and measures transformers on them (benchmarks.hf_peer):
    compiled static cache at hc.batches, assisted generation with our draft, uncompiled as a labelled extra.
    `ours_greedy`: batch -> our greedy AR tokens for the first prompts; `rows`: our decode rows, for the ratios
    written after every setting (summarize() makes them again at the end of a full run)."""
    from benchmarks import hf_peer as hf_lib
    from core.interop import hf_llama

    reason = hf_lib.available()
    if reason:
        print(reason, flush=True)
        report.update(hf=dict(skipped=reason))
        return
    paths = {name: hf_llama.export(model, os.path.join(workdir, f"hf_{name}"))
             for name, model in (("target", target), ("draft", draft))}
    count = max(hc.num_prompts, max(hc.batches))
    note = ("compiled = transformers' static cache with its default torch.compile, the peer; extra_uncompiled "
            "(disable_compile=True) is not a fair peer")
    write = lambda result: report.update(hf=dict(result, num_prompts=count, note=note),
                                         **peer_ratios(rows or {}, result))
    write(hf_lib.measure(paths["target"], paths["draft"], prompts[:count], hc.max_new_tokens,
                         batches=tuple(hc.batches), ours_greedy=ours_greedy.get(1), slow_prompts=hc.num_prompts,
                         on_update=write))


def peer_ratios(rows: dict, hf: dict | None) -> dict:
    """ours AR tokens/s over transformers' compiled static cache (and over its assisted generation), by
    batch; `ours_over_hf_compiled` is batch 1 (the issue's key)."""
    by_batch, assisted = {}, {}
    for batch, row in ((hf or {}).get("compiled") or {}).items():
        ours = rows.get(f"ar_T0_b{batch}", {}).get("tokens_per_s")
        if ours and row.get("tokens_per_s"):
            by_batch[batch] = ours / row["tokens_per_s"]
    for batch, row in ((hf or {}).get("assisted") or {}).items():
        ours = rows.get(f"ar_T0_b{batch}", {}).get("tokens_per_s")
        if ours and row.get("tokens_per_s"):
            assisted[batch] = ours / row["tokens_per_s"]
    return dict(ours_over_hf_compiled=by_batch.get("1"), ours_over_hf_compiled_by_batch=by_batch,
                ours_ar_over_hf_assisted_by_batch=assisted)


def main(argv=None):
    from benchmarks import decode_numerics, decode_plots   # they import this module's decoding functions

    parser = common.arg_parser(__doc__)
    parser.add_argument("--workdir", default="", help="scratch for checkpoints (default /tmp/bench_decode_<variant>)")
    parser.add_argument("--quick", action="store_true", help="the ~2-minute variant (configs/ssd/decode.py:quick)")
    parser.add_argument("--skip_hf", action="store_true", help="skip the transformers peer")
    parser.add_argument("--hf_only", action="store_true",
                        help="resume the pair from --workdir, time our AR at the peer's batches and the HF peer "
                        "only, and merge them into the existing JSON (the second command of a split run)")
    parser.add_argument("--budget_s", type=float, default=1e9,
                        help="skip decode configs that would start after this many seconds")
    parser.add_argument("--target_steps", type=int, default=0, help="training steps of the target (0: the config's)")
    parser.add_argument("--draft_steps", type=int, default=0, help="distillation steps of the draft (0: the "
                        "config's); more steps raise acceptance")
    parser.add_argument("--corpus_mb", type=float, default=0,
                        help="cap the corpus at this many MB of text (0: the config's); a smaller corpus builds faster")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                        help="inference params and KV cache dtype")
    parser.add_argument("--invariant_only", action="store_true",
                        help="resume the pair from --workdir and run only the invariant-numerics phase (greedy SD "
                        "vs AR in bf16, both numerics, and its cost), merged into the existing JSON")
    parser.add_argument("--invariant_gemv", default="auto", choices=("auto", "pallas", "tiled"),
                        help="projections of the invariant mode: the Pallas row-tiled GEMV (auto on GPU) or 16-row "
                        "tiles of XLA dots; auto falls back to tiled if the kernel fails")
    parser.add_argument("--extra_batches", default="4,16",
                        help="batch-sweep points run after the config's (for the tokens/s vs batch curve)")
    args = parser.parse_args(argv)
    variant = "smoke" if args.smoke else ("quick" if args.quick else "")
    config = common.load_config("ssd/decode", variant)
    if args.target_steps:
        config.train.num_steps = config.optim.total_steps = args.target_steps
    if args.draft_steps:
        config.draft_train.num_steps = args.draft_steps
    if args.corpus_mb:
        config.corpus.max_bytes = int(args.corpus_mb * 1e6)
        config.data.corpus_dir += f"_{args.corpus_mb:g}mb"     # a capped corpus is another corpus
    device = common.measure_device(args.smoke)
    common.print_device(device)
    name = "decode_quick" if args.quick and not args.smoke else "decode"
    header = common.run_info("decode", args, device=device, config=config.to_dict())
    path = common.result_path(args, name)
    if (args.hf_only or args.invariant_only) and os.path.exists(path):   # keep the first command's sweep
        with open(path, encoding="utf-8") as f:
            header = dict(json.load(f), **{"invariant_only_run" if args.invariant_only else "hf_only_run": header})
    report = common.Report(path, header)
    args.workdir = args.workdir or f"/tmp/bench_decode_{variant or 'full'}"
    t_start = time.perf_counter()
    target, draft = train_models(config, args.workdir, report)
    dc = config.decode
    prompts = held_out_prompts(config, max(dc.num_prompts, max(dc.batches)), dc.prompt_len)
    sweep = Sweep(target, draft, prompts, dc, report, deadline=t_start + args.budget_s, dtype=args.dtype,
                  device=device)
    sweep.hf_batches = tuple(config.hf.batches) if config.hf.enabled and not args.skip_hf else ()
    sweep.extra_batches = tuple(int(b) for b in args.extra_batches.split(",") if b.strip())

    def hf_fn(ours_greedy):
        if not config.hf.enabled or args.skip_hf:
            return
        try:
            hf_peer(target, draft, prompts, ours_greedy, config.hf, args.workdir, report, sweep.rows)
        except Exception as e:  # the peer is a comparison; its failure must not hide our figures
            report.update(hf=dict(error=f"{type(e).__name__}: {e}"))
        print(json.dumps(report.data.get("hf"), indent=1, default=str), flush=True)

    if args.hf_only:   # the first command's rows and summary stay; the ratios use this command's AR rows
        sweep.rows_key = "hf_only_ours_ar"
        peer_phase(sweep, hf_fn)
        ratios = peer_ratios(sweep.rows, report.data.get("hf"))
        report.update(hf_only_wall_s=time.perf_counter() - t_start, **ratios)
        print(json.dumps(ratios, indent=1), flush=True)
        print("wrote", report.path)
        return
    if args.invariant_only:
        decode_numerics.invariant_phase(sweep, target, draft, args.invariant_gemv)
        report.update(invariant_only_wall_s=time.perf_counter() - t_start)
        print("wrote", report.path, *decode_plots.plot_curves(report.data, args))
        return
    summary = decode_phases(sweep, hf_fn)
    if time.perf_counter() < sweep.deadline:
        decode_numerics.f32_greedy_identity(sweep, target, draft)
    if time.perf_counter() < sweep.deadline:
        decode_numerics.invariant_phase(sweep, target, draft, args.invariant_gemv)
    divergences = decode_numerics.near_tie_gaps(target, prompts, sweep.outputs)
    report.update(greedy_divergences=divergences, total_wall_s=time.perf_counter() - t_start)
    print(json.dumps(dict(summary, greedy_divergences=divergences), indent=1, default=str), flush=True)
    print("wrote", report.path, *decode_plots.plot_curves(report.data, args))


if __name__ == "__main__":
    main()
