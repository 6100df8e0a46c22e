"""GPU benchmark: "Pre-training under infinite compute" at small scale, the whole sweep in one command.

    python -m benchmarks.infinite_compute                 # one H200, ~7-8 min; resumes if re-run
    python -m benchmarks.infinite_compute --smoke         # CPU, tiny sizes
    python -m benchmarks.infinite_compute --analyze_only  # refit + redraw from the stored points
    python -m benchmarks.infinite_compute --stages draft --update_keys draft_acceptance_gain   # item 6 only

Needs the fixed-token set at config.data.dir (data/infinite_compute, 2.8 MB: carry it, or it is built from
the corpus, which needs tfds + tokenizers and ~2-10 min of CPU). Trains the standard, regularised, ensemble,
distillation and data-law points under a wall-clock budget (config budget_seconds), stores each point as it
finishes (runs/infinite_compute/points/*.json + orbax checkpoints), then fits and writes
benchmarks/results/infinite_compute.json and three PNGs.

Stage `draft` (after the sweep's stages; needs the distillation ensemble's synthetic pool, i.e. the `distill`
stage run in this workdir/checkpoint_dir): trains (or resumes) the SSD pair of configs/ssd/decode.py (variant
config.draft.ssd_variant, workdir --draft_pair_workdir), re-tokenises the fixed-token set and the ensemble's
samples into the pair's vocabulary (papers.infinite_compute.draft), trains a student of the plain draft's
architecture and schedule on the sweep's real:synthetic mixture, and measures both drafts for the pair's
target with benchmarks.decode.run_decode (chain SD, T = 0, batch 1, the decode benchmark's K):
`draft_acceptance_gain` = student acceptance - plain draft acceptance, with both rates and speed-ups.
"""

from __future__ import annotations

import os
import sys
import time

if "--smoke" in sys.argv:      # before JAX is imported (benchmarks.common imports it)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

from benchmarks import common  # noqa: E402

PAPER = dict(asymptote_standard=3.75, asymptote_regularized=3.43, asymptote_ensemble=3.27, asymptote_joint=3.17,
             data_efficiency_joint=5.17, data_efficiency_regularized=2.29, distill_retention=0.83)


def plot(result: dict, config, path_prefix: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from papers.infinite_compute import fits

    written = []
    sizes = result["sizes"]
    # 1. Loss vs non-embedding params per recipe, with the fitted curves.
    fig, ax = plt.subplots(figsize=(6, 4))
    grid = np.geomspace(min(s["non_embedding_params"] for s in sizes.values()) / 1.5,
                        max(s["non_embedding_params"] for s in sizes.values()) * 30, 100)
    for name, color in (("standard", "C0"), ("regularized", "C1")):
        pts = [(s["non_embedding_params"], s[name]["loss"]) for s in sizes.values() if s.get(name)]
        if pts:
            ax.plot(*zip(*pts), "o", color=color, label=f"{name} (best per N)")
        key = f"asymptote_{name}"
        fit = (result.get(key) or {}).get("fit")
        if fit and "law" in fit:
            law = fits.PowerLaw(**fit["law"])
            ax.plot(grid, law(grid), "--", color=color, label=f"{name} fit, E={law.E:.3f}")
    ens = result.get("ensembles") or {}
    if ens:
        xs = [e["non_embedding_params"] for e in ens.values()]
        ax.plot(xs, [e["E"] for e in ens.values()], "s", color="C2", label="ensemble K->inf per N")
        ax.plot(xs, [e["loss_by_K"][-1] for e in ens.values()], "^", color="C2", alpha=0.5,
                label=f"ensemble K={len(next(iter(ens.values()))['K'])}")
    if result.get("asymptote_joint"):
        law = fits.PowerLaw(**result["asymptote_joint"]["fit"])
        ax.plot(grid, law(grid), "--", color="C2", label=f"joint fit, E={law.E:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"D = {result['train_tokens']:,} tokens")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path_prefix + "_loss_vs_params.png", dpi=120)
    written.append(path_prefix + "_loss_vs_params.png")
    plt.close(fig)
    # 2. Loss vs epochs (standard recipe, wd 0.1), one line per size and lr.
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, s) in enumerate(sizes.items()):
        curves = {}
        for key, loss in s["standard_by_epochs"].items():
            lr, epochs = key.split("_e")
            curves.setdefault(lr, []).append((float(epochs), loss))
        for j, (lr, pts) in enumerate(sorted(curves.items())):
            pts.sort()
            ax.plot(*zip(*pts), "o-" if j == 0 else "x:", color=f"C{i}",
                    label=f"{name} N={s['non_embedding_params'] / 1e6:.2f}M {lr}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epochs")
    ax.set_ylabel("validation loss")
    ax.set_title("standard recipe (wd 0.1)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path_prefix + "_loss_vs_epochs.png", dpi=120)
    written.append(path_prefix + "_loss_vs_epochs.png")
    plt.close(fig)
    # 3. Ensemble loss vs K with the fits.
    if ens:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (name, e) in enumerate(ens.items()):
            law = fits.PowerLaw(**e["law"])
            ks = np.linspace(1, 16, 100)
            ax.plot(e["K"], e["loss_by_K"], "o", color=f"C{i}", label=f"{name}: E={e['E']:.3f}")
            ax.plot(ks, law(ks), "--", color=f"C{i}")
        ax.set_xlabel("ensemble members K (logit average)")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path_prefix + "_ensemble_vs_K.png", dpi=120)
        written.append(path_prefix + "_ensemble_vs_K.png")
        plt.close(fig)
    return written


def main() -> None:
    parser = common.arg_parser(__doc__)
    parser.add_argument("--workdir", default="", help="points and checkpoints (default runs/infinite_compute[_smoke])")
    parser.add_argument("--budget_seconds", type=float, default=None, help="training wall-clock budget")
    parser.add_argument("--analyze_only", action="store_true", help="only refit and redraw from stored points")
    parser.add_argument("--sizes", default="", help="train only these sizes, comma-separated (one share per GPU)")
    parser.add_argument("--checkpoint_dir", default="", help="member checkpoints (default <workdir>/checkpoints)")
    parser.add_argument("--skip_analysis", action="store_true", help="train only (another process fits)")
    parser.add_argument("--stages", default="", help="run only these sweep stages, comma-separated, from "
                        "standard,search1,distill,ensembles,data_law,search2 (default all) and draft (the "
                        "student as an SSD draft; only when named)")
    parser.add_argument("--draft_pair_workdir", default="", help="the SSD pair's checkpoints for the draft stage "
                        "(default <workdir>/ssd_pair; e.g. a benchmarks.decode --quick --workdir to reuse)")
    parser.add_argument("--draft_corpus_mb", type=float, default=0, help="cap the SSD pair's corpus at this many "
                        "MB of text (0: the SSD config's), as benchmarks.decode --corpus_mb: a faster build")
    parser.add_argument("--draft_corpus_dir", default="", help="the SSD pair's corpus (default the SSD config's, "
                        "/tmp/ssd_corpus; point it at a carried copy to skip the 32k corpus build)")
    parser.add_argument("--update_keys", default="",
                        help="comma-separated top-level keys (e.g. distill_retention) to replace in the existing "
                        "results JSON instead of rewriting it (a partial sweep keeps the full run's figures)")
    args = parser.parse_args()
    from core import metrics
    from papers.infinite_compute import analysis
    from papers.infinite_compute import data as data_lib
    from papers.infinite_compute import sweep as sweep_lib

    config = common.load_config("infinite_compute/sweep", "smoke" if args.smoke else "")
    if args.budget_seconds is not None:
        config.budget_seconds = args.budget_seconds
    if args.draft_corpus_dir:
        config.draft.corpus_dir = args.draft_corpus_dir
    config.draft.corpus_mb = args.draft_corpus_mb
    name = common.result_name("infinite_compute", args.smoke)
    workdir = args.workdir or os.path.join("runs", name)
    started = time.time()
    summary = None
    if not args.analyze_only:
        data_lib.ensure_fixed_token_set(config)
        sweep = sweep_lib.Sweep(config, workdir, deadline=started + config.budget_seconds,
                                sizes=[s for s in args.sizes.split(",") if s], checkpoint_dir=args.checkpoint_dir or None)
        stages = [s for s in args.stages.split(",") if s]
        sweep_stages = [s for s in stages if s != "draft"]
        summary = sweep.run(sweep_stages or ([] if stages else sweep_lib.STAGES))
        print(f"sweep: {summary}", flush=True)
        if "draft" in stages:
            try:
                gain = draft_stage(config, sweep, args.draft_pair_workdir or os.path.join(workdir, "ssd_pair"),
                                   args.smoke)
                summary["draft"] = dict(seconds=gain["wall_s"])
            except FileNotFoundError as error:     # no teacher pool yet: the sweep's keys are still written
                print(f"draft stage not run: {error}", flush=True)
                summary["draft"] = dict(error=str(error))
        if args.skip_analysis:
            return
    points = os.path.join(workdir, "points")          # recipe.PointStore's layout: one JSON per finished point
    if args.analyze_only and not (os.path.isdir(points) and any(f.endswith(".json") for f in os.listdir(points))):
        raise SystemExit(f"--analyze_only found no stored points in {workdir}; run the sweep there first, or pass "
                         "the --workdir that holds them.")
    result = analysis.analyze(config, workdir)
    os.makedirs(args.out, exist_ok=True)
    try:     # a partial run (--update_keys) leaves the full run's figures alone
        figures = [] if args.update_keys else plot(result, config, os.path.join(args.out, name))
    except ImportError as error:      # matplotlib missing on the GPU image: redraw with --analyze_only
        figures = [f"not drawn: {error}"]
    efficiency = result.get("data_efficiency") or {}
    draft_gain = metrics.read_json(os.path.join(workdir, DRAFT_RESULT))
    payload = common.run_info(
        name, args, config=config.to_dict(), workdir=workdir, paper=PAPER,
        asymptote_standard=result["asymptote_standard"], asymptote_regularized=result["asymptote_regularized"],
        asymptote_ensemble=result["asymptote_ensemble"], asymptote_joint=result["asymptote_joint"],
        data_efficiency=efficiency or None,
        distill_retention=result["distill_retention"],
        draft_acceptance_gain=draft_gain,
        draft_acceptance_gain_reason=None if draft_gain else (
            ((summary or {}).get("draft") or {}).get("error") or
            "not measured in this workdir: run `--stages draft` (after the distill stage) to train the "
            "re-tokenised student and measure it against the SSD pair's plain draft"),
        ordering_holds=_ordering(result),
        sizes=result["sizes"], ensembles=result["ensembles"], data_law=result["data_law"], notes=result["notes"],
        sweep=summary, figures=figures, wall_seconds=time.time() - started)
    path = common.result_path(args, "infinite_compute")
    if args.update_keys:
        payload = _updated(path, payload, [k for k in args.update_keys.split(",") if k])
    metrics.write_json(path, payload)
    rows = [("standard (best finite)", result["asymptote_standard"], PAPER["asymptote_standard"]),
            ("regularized E", result["asymptote_regularized"], PAPER["asymptote_regularized"]),
            ("ensemble E (K->inf)", result["asymptote_ensemble"], PAPER["asymptote_ensemble"]),
            ("joint E (N,K->inf)", result["asymptote_joint"], PAPER["asymptote_joint"]),
            ("distill retention", result["distill_retention"], PAPER["distill_retention"])]
    print(f"\n{'measure':28s} {'ours':>8s} {'interval':>20s} {'paper':>6s}")
    for label, value, paper in rows:
        v = "n/a" if not value else f"{value['value']:.3f}"
        ci = "" if not value or "interval" not in value else "[{:.3f}, {:.3f}]".format(*value["interval"])
        print(f"{label:28s} {v:>8s} {ci:>20s} {paper:6.2f}")
    for key, value in efficiency.items():
        if key != "standard_data_law":
            print(f"data efficiency {key:12s} {value:8.2f}x")
    print(f"wrote {common.result_path(args, 'infinite_compute')} and {len(figures)} figures "
          f"in {time.time() - started:.0f}s")


DRAFT_RESULT = "draft_acceptance_gain.json"    # in the sweep workdir, so --analyze_only keeps it


def ssd_pair_config(config, smoke: bool):
    """configs/ssd/decode.py at config.draft.ssd_variant, with the draft section's step overrides."""
    d = config.draft
    ssd = common.load_config("ssd/decode", "smoke" if smoke else d.ssd_variant)
    if d.target_steps:
        ssd.train.num_steps = ssd.optim.total_steps = int(d.target_steps)
    if d.draft_steps:
        ssd.draft_train.num_steps = int(d.draft_steps)
    if d.get("corpus_mb"):
        ssd.corpus.max_bytes = int(d.corpus_mb * 1e6)
        ssd.data.corpus_dir += f"_{d.corpus_mb:g}mb"       # a capped corpus is another corpus (as decode.py)
    if d.corpus_dir:
        ssd.data.corpus_dir = d.corpus_dir
    return ssd


def synthetic_pool(sweep, config):
    """The distillation ensemble's synthetic windows (4k vocab): the stored pool, else sampled from the stored
    teachers (sweep.synthesize, the same pool the distill stage's students use)."""
    d = config.distill
    teachers = sweep.ensemble_points(d.size) if d.size in sweep.sizes else None
    path = os.path.join(sweep.store.checkpoint_dir, "synthetic", f"{config.draft.pool}.npy")
    if os.path.exists(path):
        import numpy as np
        return np.load(path).astype("int32")
    if teachers is None or not all(sweep.store.has(p.id) for p in teachers):
        raise FileNotFoundError(f"No synthetic pool at {path} and no finished {d.size} ensemble to sample it; run "
                                "`--stages standard,search1,distill,draft` (the stages run in that order).")
    return sweep.synthesize(config.draft.pool, teachers if config.draft.pool == "ensemble" else teachers[:1],
                            d.synthetic_windows, 1 if config.draft.pool == "ensemble" else 2)


def measure_drafts(target, drafts: dict, prompts, num_draft: int, max_new_tokens: int, repeats: int,
                   dtype: str) -> dict:
    """AR and chain SD (T = 0, batch 1, one prompt per call) of `target` with each draft, through
    benchmarks.decode.run_decode (the decode benchmark's own timing): acceptance, tokens per target forward,
    tokens/s, speed-up over AR, and whether greedy SD reproduced greedy AR token for token."""
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import decode
    from papers.ssd import engine

    dtype = jnp.dtype(dtype)
    tg, ts = decode.inference_split(target, dtype)
    sets = [prompts[i:i + 1] for i in range(len(prompts))]
    first = next(iter(drafts.values()))
    dg, ds = decode.inference_split(first, dtype)
    ar = decode.run_decode(((tg, ts, target.config), (dg, ds, first.config)),
                           engine.DecodeConfig("ar", max_new_tokens), sets, repeats, dtype=dtype)
    out = dict(ar=dict(tokens_per_s=ar["tokens_per_s"], compile_s=ar["compile_s"]))
    for name, model in drafts.items():
        dg, ds = decode.inference_split(model, dtype)
        row = decode.run_decode(((tg, ts, target.config), (dg, ds, model.config)),
                                engine.DecodeConfig("chain", max_new_tokens, num_draft=num_draft), sets, repeats,
                                dtype=dtype)
        out[name] = dict(acceptance=row["acceptance"], tokens_per_step=row["tokens_per_step"],
                         tokens_per_s=row["tokens_per_s"], speedup=row["tokens_per_s"] / ar["tokens_per_s"],
                         greedy_identical_to_ar=float(np.mean(np.all(row["last_tokens"] == ar["last_tokens"], -1))),
                         compile_s=row["compile_s"])
        print(f"chain K={num_draft} {name:8s} acceptance {row['acceptance']:.3f} "
              f"{row['tokens_per_s']:8.1f} tok/s speed-up {out[name]['speedup']:.2f}x", flush=True)
    return out


def draft_stage(config, sweep, pair_workdir: str, smoke: bool) -> dict:
    """Item 6: the ensemble-distilled student (re-tokenised) against the pair's plain draft; stored in the
    sweep workdir (DRAFT_RESULT) and returned."""
    import numpy as np

    from core import metrics
    from core.data import lm_pipeline
    from core.data import tokenizer as tokenizer_lib
    from papers.infinite_compute import data as data_lib
    from papers.infinite_compute import draft as draft_lib
    from papers.ssd import pair

    started = time.time()
    d = config.draft
    synthetic = synthetic_pool(sweep, config)        # first: a missing teacher stops before any training
    ssd = ssd_pair_config(config, smoke)
    plain_config = draft_lib.student_config(ssd)
    target, plain = pair.train_pair(ssd, plain_config, pair_workdir)
    vocab = pair.vocab_size(ssd)
    arrays, _ = data_lib.load_fixed_token_set(config.data.dir)
    source = tokenizer_lib.load_tokenizer(config.data.dir)
    dest = tokenizer_lib.load_tokenizer(ssd.data.corpus_dir)
    real_w, synth_w, counts = draft_lib.mixture_windows(arrays["train"], synthetic, source, dest, ssd.data.seq_len)
    student = draft_lib.train_student(plain_config, os.path.join(sweep.workdir, f"draft_student_{d.pool}"),
                                      real_w, synth_w, d.synthetic_fraction, vocab)
    dc = ssd.decode
    num_draft = int(d.num_draft or dc.ks[len(dc.ks) // 2])     # the decode benchmark's headline K
    prompts = lm_pipeline.make_lm_iterator(ssd.data.corpus_dir, "validation", dc.prompt_len, d.prompts,
                                           seed=0, num_epochs=1)
    prompts = np.asarray(next(prompts)["tokens"][:, :dc.prompt_len], np.int32)
    rows = measure_drafts(target, dict(plain=plain, student=student), prompts, num_draft,
                          int(d.max_new_tokens or dc.max_new_tokens), 1, d.dtype)
    summaries = pair.read_summary(pair_workdir)
    student_summary = draft_lib.read_summary(os.path.join(sweep.workdir, f"draft_student_{d.pool}")) or {}
    result = dict(
        value=rows["student"]["acceptance"] - rows["plain"]["acceptance"],
        student_acceptance=rows["student"]["acceptance"], plain_acceptance=rows["plain"]["acceptance"],
        student_speedup=rows["student"]["speedup"], plain_speedup=rows["plain"]["speedup"],
        speedup_gain=rows["student"]["speedup"] - rows["plain"]["speedup"],
        student_val_loss=pair.validation_loss(student, plain_config),
        plain_val_loss=pair.validation_loss(plain, plain_config),
        target_val_loss=(summaries.get("target") or {}).get("val_loss"),
        decode=dict(mode="chain", num_draft=num_draft, temperature=0.0, batch=1, prompts=int(len(prompts)),
                    prompt_len=int(dc.prompt_len), max_new_tokens=int(d.max_new_tokens or dc.max_new_tokens),
                    dtype=d.dtype, rows=rows),
        trained_on=dict(
            student=(f"next-token CE on {1 - d.synthetic_fraction:g} real : {d.synthetic_fraction:g} synthetic "
                     f"per batch; real = the {counts['real_source_tokens']:,}-token fixed-token set re-tokenised "
                     f"to {counts['real_tokens']:,} pair tokens; synthetic = {len(synthetic)} temperature-1 "
                     f"samples of the {config.distill.size} {d.pool} teacher (4k vocab), re-tokenised to "
                     f"{counts['synthetic_tokens']:,} tokens; {plain_config.train.num_steps} steps x "
                     f"{plain_config.data.batch_size} x {plain_config.data.seq_len}"),
            plain=(f"KL(target || draft) + {plain_config.distill.hard_weight:g} x CE on the pair's corpus "
                   f"({ssd.data.corpus_dir}), {plain_config.train.num_steps} steps x {plain_config.data.batch_size}"
                   f" x {plain_config.data.seq_len}"),
            same=("architecture, optimizer, schedule, init seed and step count (papers.ssd.pair.draft_config); "
                  "only data and loss differ")),
        retokenization=counts, student_training=student_summary, pair_training=summaries,
        ssd_variant="smoke" if smoke else d.ssd_variant, pair_workdir=pair_workdir, vocab=vocab,
        draft_model=dict(plain_config.model.to_dict()), wall_s=time.time() - started)
    metrics.write_json(os.path.join(sweep.workdir, DRAFT_RESULT), result)
    print(f"draft_acceptance_gain: {result['value']:+.3f} (student {result['student_acceptance']:.3f}, plain "
          f"{result['plain_acceptance']:.3f}); speed-up student {result['student_speedup']:.2f}x, plain "
          f"{result['plain_speedup']:.2f}x", flush=True)
    return result


def _updated(path: str, payload: dict, keys: list[str]) -> dict:
    """The results JSON at `path` with only `keys` taken from this run's `payload` (and the update logged)."""
    import json

    unknown = [k for k in keys if k not in payload]
    if unknown:
        raise ValueError(f"--update_keys {unknown} are not keys of the results JSON; use e.g. distill_retention.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; run the full sweep first or drop --update_keys.")
    with open(path, encoding="utf-8") as f:
        existing = json.load(f)
    existing.update({k: payload[k] for k in keys})
    existing.setdefault("updates", []).append(dict(
        keys=keys, command=payload["command"], date=payload["date"], workdir=payload["workdir"],
        sweep=payload["sweep"], wall_seconds=payload["wall_seconds"]))
    return existing


def _ordering(result: dict) -> dict:
    """The paper's ordering standard > regularised > ensemble > joint, checked on what was measured."""
    keys = ["asymptote_standard", "asymptote_regularized", "asymptote_ensemble", "asymptote_joint"]
    values = [(k, result[k]["value"]) for k in keys if result.get(k)]
    return dict(checked=[k for k, _ in values],
                holds=all(a[1] > b[1] for a, b in zip(values, values[1:])) if len(values) > 1 else None)


if __name__ == "__main__":
    main()
