"""Two-GPU benchmark of speculative speculative decoding (SSD / Saguaro) against AR and chain SD.

    python -m benchmarks.ssd              # 2 GPUs: train the pair (configs/ssd/ssd.py), measure, ~8 min
    python -m benchmarks.ssd --smoke      # CPU, 2 fake devices, tiny pair: checks the script

1. Trains (or restores from --workdir) the decode benchmark's target and distilled draft (papers.ssd.pair).
2. Batch 1, T = 0, held-out prompts: AR on GPU 0, the draft alone (c = t_draft / t_target), chain SD on GPU 0
   (best of config.ssd.chain_ks), and SSD with the target on GPU 0 and the draft on GPU 1: the neural
   fallback with the lookup on the draft (the paper's handshake) and the fast fallback with the lookup on the
   target. Hit rate (overall and per accepted length), accepted length on hit / miss, and each piece of a
   round timed alone (verify, draft tree, lookup + fallback, the transfers between the GPUs), from which the
   target's and draft's idle time per round and Theorem 7's predicted speed-up follow.
3. In priority order while the budget lasts (config.ssd.budget_s): T = 1 at batch 1; batch sweep 1..32 at
   T = 0 for AR, SD and SSD with both fallbacks, with the measured and the predicted crossover batch b*;
   uniform fan-out sweep (hit rate vs F, power-law exponent r) and Theorem 12's geometric vector with the
   fitted r; Saguaro's C sweep at T = 1 (hit rate vs acceptance).
Writes benchmarks/results/ssd.json (top-level `ssd_over_sd`, `hit_rate`: T = 0, batch 1) after every phase
and ssd_batch.png (tokens/s vs batch) and ssd_fanout.png (hit rate vs fan-out).
"""

from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:   # two fake CPU devices, set before JAX starts
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"

import time  # noqa: E402

import jax  # noqa: E402

if "--smoke" in sys.argv:
    jax.config.update("jax_num_cpu_devices", 2)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.decode import held_out_prompts, inference_split, run_decode, train_models  # noqa: E402
from papers.ssd import engine, fanout, ssd, ssd_runtime, ssd_stats  # noqa: E402


def run_ssd(runtime: ssd_runtime.SSDRuntime, prompt_sets, repeats: int, seed: int = 0) -> dict:
    """Compiles on the first set, then times `repeats` passes; stats are summed over the timed calls."""
    runtime.generate(prompt_sets[0], np.full(len(prompt_sets[0]), prompt_sets[0].shape[1], np.int32),
                     jax.random.key(seed))
    wall, tokens, rounds, results = 0.0, 0, 0, []
    with common.no_compiles("ssd"):
        for rep in range(repeats):
            for i, prompts in enumerate(prompt_sets):
                lengths = np.full(len(prompts), prompts.shape[1], np.int32)
                t0 = time.perf_counter()
                result = runtime.generate(prompts, lengths, jax.random.key(seed + 1 + rep * len(prompt_sets) + i))
                wall += time.perf_counter() - t0
                tokens += int(result.num_tokens.sum())
                rounds += result.rounds
                results.append(result)
    return dict(tokens_per_s=tokens / wall, seconds_per_round=wall / rounds, batch=len(prompt_sets[0]),
                **merge_stats([r.stats for r in results]), last_tokens=np.concatenate([r.tokens for r in results[-len(prompt_sets):]]))


def merge_stats(stats: list[dict]) -> dict:
    """Pools the per-call counters of several generate calls into rates."""
    k = stats[0]["num_draft"]
    by = lambda key: sum(s["rounds_by_source"][key] for s in stats)
    acc = lambda rate, key: sum((s[rate] or 0) * s["rounds_by_source"][key] for s in stats)
    outcomes = np.sum([s["outcomes_by_accepted"] for s in stats], 0)
    hits = np.sum([[(h or 0) * o for h, o in zip(s["hit_rate_by_accepted"], s["outcomes_by_accepted"])]
                   for s in stats], 0)
    rounds = sum(s["rounds"] for s in stats)
    accepted = sum(s["accepted"] for s in stats)
    safe = lambda a, b: float(a / b) if b else None
    return dict(hit_rate=safe(hits.sum(), outcomes.sum()),
                hit_rate_by_accepted=[safe(h, o) for h, o in zip(hits, outcomes)],
                outcomes_by_accepted=outcomes.tolist(), acceptance=safe(accepted, rounds * k),
                tokens_per_round=safe(accepted + rounds, rounds),
                accepted_on_hit=safe(acc("accepted_on_hit", "hit"), by("hit")),
                accepted_on_miss=safe(acc("accepted_on_miss", "miss"), by("miss")),
                rounds_by_source=dict(hit=by("hit"), miss=by("miss"), initial=by("initial")),
                fallback_rounds=sum(s["fallback_rounds"] for s in stats),
                host_enqueue_s_per_round=float(np.mean([s["host_enqueue_s_per_round"] for s in stats])))


class Bench:
    def __init__(self, args, config, target, draft, report: common.Report):
        dtype = jnp.float32 if args.smoke else jnp.bfloat16
        self.dtype, self.sc, self.report, self.args = dtype, config.ssd, report, args
        tg, ts = inference_split(target, dtype)
        dg, ds = inference_split(draft, dtype)
        self.models = ((tg, ts, target.config), (dg, ds, draft.config))
        self.draft_alone = ((dg, ds, draft.config), (dg, ds, draft.config))
        self.prompts = held_out_prompts(config, self.sc.num_prompts, self.sc.prompt_len)
        self.placement = ssd_runtime.place(1, separate_draft=len(jax.devices()) > 1)
        self.deadline = time.perf_counter() + self.sc.budget_s
        self.rows, self.outputs, self.skipped = {}, {}, []

    def sets(self, batch):
        if batch == 1:
            return [self.prompts[i:i + 1] for i in range(self.sc.batch1_prompts)]
        return [self.prompts[:batch]]

    def late(self, name) -> bool:
        if time.perf_counter() > self.deadline:
            self.skipped.append(name)
            self.report.update(skipped=self.skipped)
            return True
        return False

    def engine(self, name, mode, batch, temperature, k=0, draft_alone=False):
        if self.late(name) or name in self.rows:
            return self.rows.get(name)
        config = engine.DecodeConfig(mode, self.sc.max_new_tokens, num_draft=max(k, 1), temperature=temperature)
        row = run_decode(self.draft_alone if draft_alone else self.models, config, self.sets(batch),
                         self.sc.repeats, dtype=self.dtype)
        self.outputs[name] = row.pop("last_tokens")
        return self._record(name, dict(row, kind=mode, temperature=temperature))

    def ssd(self, name, batch, temperature, **overrides):
        if self.late(name) or name in self.rows:
            return self.rows.get(name)
        sc = self.sc
        settings = dict(num_draft=sc.num_draft, fan_out_hit=fanout.uniform(sc.num_draft, sc.fan_out),
                        max_new_tokens=sc.max_new_tokens, temperature=temperature)
        settings.update(overrides)
        config = ssd.SSDConfig(**settings)
        (tg, ts, tcfg), (dg, ds, dcfg) = self.models
        runtime = ssd_runtime.SSDRuntime(tg, ts, tcfg, dg, ds, dcfg, config, self.placement, cache_dtype=self.dtype)
        row = run_ssd(runtime, self.sets(batch), sc.repeats)
        self.outputs[name] = row.pop("last_tokens")
        row.update(kind="ssd", temperature=temperature, backup=config.backup, lookup=config.lookup,
                   fan_out_hit=config.fan_out_hit, saguaro_c=config.saguaro_c, num_draft=config.num_draft)
        if batch == 1 and temperature == 0 and "pieces" not in row:
            pieces = ssd_stats.time_pieces(runtime, self.sets(1)[0], np.asarray([sc.prompt_len], np.int32),
                                           jax.random.key(7), sc.piece_rounds)
            row["pieces_s"] = pieces
        return self._record(name, row)

    def _record(self, name, row):
        self.rows[name] = dict(row, name=name)
        extra = (f" hit={row['hit_rate']:.3f}" if row.get("hit_rate") is not None else "")
        print(f"{name:28s} b={row['batch']:3d} T={row['temperature']:.1f} {row['tokens_per_s']:9.1f} tok/s "
              f"acc={row.get('acceptance') or float('nan'):.3f}{extra}", flush=True)
        self.report.update(rows=list(self.rows.values()))
        return self.rows[name]


def identical_to_ar(bench: Bench, name: str, ar_name: str):
    if name not in bench.outputs or ar_name not in bench.outputs:
        return None
    a, b = bench.outputs[name], bench.outputs[ar_name]
    return float((a == b).all(-1).mean()) if a.shape == b.shape else None


def headline(bench: Bench) -> dict:
    """Batch 1, T = 0: c, SD, SSD (both fallbacks), idle times and Theorem 7's prediction."""
    sc = bench.sc
    ar = bench.engine("ar_T0_b1", "ar", 1, 0.0)
    draft = bench.engine("draft_ar_T0_b1", "ar", 1, 0.0, draft_alone=True)
    chains = [bench.engine(f"chain_K{k}_T0_b1", "chain", 1, 0.0, k) for k in sc.chain_ks]
    chains = [c for c in chains if c]
    sd = max(chains, key=lambda r: r["tokens_per_s"]) if chains else None
    jit = bench.ssd("ssd_jit_T0_b1", 1, 0.0, backup="jit", lookup="draft")
    fast = bench.ssd("ssd_fast_target_T0_b1", 1, 0.0, backup="fast", lookup="target")
    candidates = [r for r in (jit, fast) if r]
    best = max(candidates, key=lambda r: r["tokens_per_s"]) if candidates else None
    out = dict(c=ar["tokens_per_s"] / draft["tokens_per_s"] if ar and draft else None,
               sd_name=sd and sd["name"], ssd_name=best and best["name"])
    if best and sd:
        out["ssd_over_sd"] = best["tokens_per_s"] / sd["tokens_per_s"]
    if best and ar:
        out["ssd_over_ar"] = best["tokens_per_s"] / ar["tokens_per_s"]
        out["sd_over_ar"] = sd["tokens_per_s"] / ar["tokens_per_s"] if sd else None
    if best:
        out["hit_rate"] = best["hit_rate"]
    out["greedy_identical_to_ar"] = {r["name"]: identical_to_ar(bench, r["name"], "ar_T0_b1")
                                     for r in [sd, jit, fast] if r}
    for row in candidates:
        out[row["name"]] = analyse(row, ar, draft, sc.num_draft)
    return out


def analyse(row: dict, ar: dict | None, draft: dict | None, k: int) -> dict:
    """Idle times from the pieces timed alone, and Theorem 7's predicted speed-up over AR."""
    pieces = row.get("pieces_s")
    if not pieces:
        return {}
    rnd = row["seconds_per_round"]
    verify, tree, advance = pieces["verify"], pieces["tree"], pieces["advance"]
    handshake = pieces["outcome_transfer"] + (pieces["spec_transfer"] if row["lookup"] == "draft" else 0.0)
    out = dict(seconds_per_round=rnd, verify_s=verify, draft_tree_s=tree, lookup_and_fallback_s=advance,
               outcome_transfer_s=pieces["outcome_transfer"], spec_transfer_s=pieces["spec_transfer"],
               cache_transfer_s=pieces["cache_transfer"], target_lookup_s=pieces["target_lookup"],
               target_idle_s=max(0.0, rnd - verify), draft_idle_s=max(0.0, rnd - tree - advance),
               target_idle_fraction=max(0.0, 1 - verify / rnd), draft_idle_fraction=max(0.0, 1 - (tree + advance) / rnd),
               handshake_s=handshake, host_enqueue_s_per_round=row.get("host_enqueue_s_per_round"))
    if ar and draft:
        t_ar = 1.0 / ar["tokens_per_s"]                     # one target step at batch 1
        t_backup = k / draft["tokens_per_s"]               # K draft decodes, the neural fallback
        e_hit = 1 + (row["accepted_on_hit"] or 0.0)
        e_miss = 1 + (row["accepted_on_miss"] if row["accepted_on_miss"] is not None else 0.0)
        p = row["hit_rate"] or 0.0
        t_p, t_b = tree / verify, (t_backup if row["backup"] == "jit" else 0.0) / verify
        in_verify_units = fanout.theorem7_speedup(p, e_hit, e_miss, t_p, t_b)
        out.update(theorem7=dict(p_hit=p, e_hit=e_hit, e_miss=e_miss, t_primary=t_p, t_backup=t_b,
                                 tokens_per_verify=in_verify_units,
                                 predicted_over_ar=in_verify_units * t_ar / verify,
                                 measured_over_ar=row["tokens_per_s"] / ar["tokens_per_s"]))
    return out


def fan_out_sweep(bench: Bench) -> dict:
    sc = bench.sc
    points = []
    for f in sc.fan_out_sweep:
        row = bench.ssd(f"ssd_jit_F{f}_T0_b1", 1, 0.0, fan_out_hit=fanout.uniform(sc.num_draft, f))
        if row:
            points.append((f, row["hit_rate"], row["tokens_per_s"], row["acceptance"]))
    out = dict(points=[dict(fan_out=f, hit_rate=h, tokens_per_s=t, acceptance=a) for f, h, t, a in points])
    try:
        r = fanout.fit_power_law([p[0] for p in points], [p[1] for p in points])
    except ValueError:
        r = None
    out["power_law_r"] = r
    acceptance = bench.rows.get("ssd_jit_T0_b1", {}).get("acceptance")
    if r and acceptance and 0 < acceptance < 1:
        vector = fanout.geometric(sc.num_draft, sc.geometric_budget, acceptance, r)
        out["geometric_fan_out"] = vector
        row = bench.ssd("ssd_jit_geometric_T0_b1", 1, 0.0, fan_out_hit=vector)
        even = [sc.geometric_budget // (sc.num_draft + 1)] * (sc.num_draft + 1)
        for j in range(sc.geometric_budget - sum(even)):
            even[j] += 1
        uniform_equal_budget = bench.ssd("ssd_jit_even_budget_T0_b1", 1, 0.0, fan_out_hit=tuple(even))
        for name, rr in (("geometric", row), ("uniform_same_budget", uniform_equal_budget)):
            if rr:
                out[name] = dict(fan_out=rr["fan_out_hit"], hit_rate=rr["hit_rate"], tokens_per_s=rr["tokens_per_s"])
    return out


def saguaro_sweep(bench: Bench) -> list:
    out = []
    for c in bench.sc.saguaro_sweep:
        row = bench.ssd(f"ssd_jit_C{c:g}_T1_b1", 1, 1.0, saguaro_c=c)
        if row:
            out.append(dict(c=c, hit_rate=row["hit_rate"], acceptance=row["acceptance"],
                            tokens_per_round=row["tokens_per_round"], tokens_per_s=row["tokens_per_s"]))
    return out


def batch_sweep(bench: Bench, sd_k: int) -> dict:
    table = {}
    for b in bench.sc.batches:
        if b > len(bench.prompts):
            continue
        rows = dict(ar=bench.engine(f"ar_T0_b{b}", "ar", b, 0.0),
                    sd=bench.engine(f"chain_K{sd_k}_T0_b{b}", "chain", b, 0.0, sd_k),
                    ssd_jit=bench.ssd(f"ssd_jit_T0_b{b}", b, 0.0, backup="jit"),
                    ssd_fast=bench.ssd(f"ssd_fast_target_T0_b{b}", b, 0.0, backup="fast", lookup="target"))
        table[b] = {k: r["tokens_per_s"] for k, r in rows.items() if r}
    measured = [b for b in sorted(table) if {"ssd_jit", "ssd_fast"} <= set(table[b])
                and table[b]["ssd_fast"] >= table[b]["ssd_jit"]]
    return dict(tokens_per_s=table, measured_b_star=measured[0] if measured else None)


def predicted_b_star(bench: Bench, draft: dict | None) -> float | None:
    jit, fast = bench.rows.get("ssd_jit_T0_b1"), bench.rows.get("ssd_fast_target_T0_b1")
    if not (jit and fast and draft and jit.get("pieces_s")):
        return None
    verify = jit["pieces_s"]["verify"]
    return fanout.crossover_batch(
        jit["hit_rate"], 1 + (jit["accepted_on_hit"] or 0), 1 + (jit["accepted_on_miss"] or 0),
        1 + (fast["accepted_on_miss"] or 0), jit["pieces_s"]["tree"] / verify,
        bench.sc.num_draft / draft["tokens_per_s"] / verify)


def plots(bench: Bench, summary: dict, args) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    table = summary.get("batch_sweep", {}).get("tokens_per_s", {})
    if table:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label in (("ar", "AR"), ("sd", "chain SD"), ("ssd_jit", "SSD, neural fallback"),
                           ("ssd_fast", "SSD, fast fallback")):
            xs = [b for b in sorted(table) if key in table[b]]
            ax.plot(xs, [table[b][key] for b in xs], "o-", label=label)
        ax.set(xscale="log", yscale="log", xlabel="batch", ylabel="tokens/s",
               title=f"T = 0; target on {bench.placement.target_devices[0]}, draft on {bench.placement.draft_device}")
        ax.legend()
        paths.append(common.result_path(args, "ssd_batch", "png"))
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    points = summary.get("fan_out", {}).get("points", [])
    if points:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        f = np.asarray([p["fan_out"] for p in points], float)
        ax.plot(f, [p["hit_rate"] for p in points], "o-", label="measured")
        r = summary["fan_out"].get("power_law_r")
        if r:
            grid = np.linspace(1, f.max(), 50)
            ax.plot(grid, 1 - grid ** -r, "--", label=f"1 - F^-{r:.2f}")
        ax.set(xlabel="uniform fan-out F", ylabel="cache hit rate", title="T = 0, batch 1")
        ax.legend()
        paths.append(common.result_path(args, "ssd_fanout", "png"))
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return paths


def main():
    parser = common.arg_parser(__doc__)
    parser.add_argument("--workdir", default="/tmp/bench_ssd", help="scratch: corpus, checkpoints")
    args = parser.parse_args()
    config = common.load_config("ssd/ssd", "smoke" if args.smoke else "")
    if len(jax.devices()) < 2:
        print("warning: one device: target and draft share it (no overlap)", flush=True)
    report = common.Report(common.result_path(args, "ssd"), common.run_info(
        "ssd", args, config=config.to_dict(), devices=[str(d) for d in jax.devices()]))
    workdir = args.workdir + ("_smoke" if args.smoke else "")
    target, draft = train_models(config, workdir, report)
    bench = Bench(args, config, target, draft, report)
    summary = dict(headline(bench))
    report.update(**summary)
    summary["T1"] = dict(ar=bench.engine("ar_T1_b1", "ar", 1, 1.0),
                         sd=bench.engine(f"chain_K{config.ssd.chain_ks[-1]}_T1_b1", "chain", 1, 1.0,
                                         config.ssd.chain_ks[-1]),
                         ssd=bench.ssd("ssd_jit_T1_b1", 1, 1.0))
    summary["T1"] = {k: v and {key: v.get(key) for key in ("tokens_per_s", "acceptance", "hit_rate")}
                     for k, v in summary["T1"].items()}
    if summary["T1"].get("ssd") and summary["T1"].get("sd"):
        summary["ssd_over_sd_T1"] = summary["T1"]["ssd"]["tokens_per_s"] / summary["T1"]["sd"]["tokens_per_s"]
    report.update(**summary)
    sd_k = int(summary["sd_name"].split("_")[1][1:]) if summary.get("sd_name") else config.ssd.chain_ks[0]
    summary["batch_sweep"] = batch_sweep(bench, sd_k)
    summary["batch_sweep"]["predicted_b_star"] = predicted_b_star(bench, bench.rows.get("draft_ar_T0_b1"))
    report.update(**summary)
    summary["fan_out"] = fan_out_sweep(bench)
    report.update(**summary)
    summary["saguaro"] = saguaro_sweep(bench)
    report.update(**summary)
    report.update(figures=plots(bench, summary, args))
    print(f"ssd_over_sd={summary.get('ssd_over_sd')} hit_rate={summary.get('hit_rate')} c={summary.get('c')} "
          f"-> {report.path}", flush=True)


if __name__ == "__main__":
    main()
