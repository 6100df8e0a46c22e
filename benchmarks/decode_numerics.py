"""benchmarks.decode's numerics phases: greedy SD against greedy AR in f32 (what bf16's near-ties leave), in bf16
with the target's numerics="invariant" against the default mode (`invariant_numerics`, `greedy_identical_bf16`),
and the logit gap at every divergence (a near-tie means rounding, a large gap a bug)."""

from __future__ import annotations

from benchmarks.decode import Sweep, greedy_ar_reference, inference_split, run_decode


def f32_greedy_identity(sweep: Sweep, target, draft) -> dict:
    """Greedy chain and tree SD vs greedy AR with f32 params and caches and full-precision matmuls, over all
    prompts in one batch: what is left of bf16's near-ties (verify and decode sum in different orders)."""
    import jax
    import numpy as np

    from papers.ssd import engine, tree as tree_lib

    dc, new, f32 = sweep.dc, sweep.dc.max_new_tokens, np.dtype("float32")
    tg, ts = inference_split(target, f32)
    dg, ds = inference_split(draft, f32)
    models = ((tg, ts, target.config), (dg, ds, draft.config))
    configs = dict(ar=engine.DecodeConfig("ar", new), chain=engine.DecodeConfig("chain", new, num_draft=5),
                   tree=engine.DecodeConfig("tree", new, tree=tree_lib.tree_from_branching(tuple(dc.tree_branching)),
                                            tree_children="topk"))
    with jax.default_matmul_precision("highest"):
        outs = {name: run_decode(models, config, [sweep.prompts], 1, dtype=f32)["last_tokens"]
                for name, config in configs.items()}
    result = dict(sequences=len(sweep.prompts), max_new_tokens=new,
                  **{f"{name}_identical_to_ar": float((outs[name] == outs["ar"]).all(-1).mean())
                     for name in ("chain", "tree")})
    sweep.report.update(greedy_identical_f32=result)
    print("f32 greedy identity:", result, flush=True)
    return result


def invariant_greedy_identity(sweep: Sweep, target, draft, gemv: str = "auto", errors: dict | None = None) -> dict:
    """Greedy chain and tree SD vs greedy AR in bf16 with the target in numerics="invariant" (core.nn.transformer:
    one reduction order for decode and verify) and, on the same batch in the same run, in the default mode;
    tokens/s of both modes (all prompts in one batch, and AR / chain at batch 1), so the mode's cost is measured.
    `greedy_identical_bf16`: the fraction of SD sequences (chain and tree pooled) equal to AR, invariant mode."""
    import dataclasses

    import numpy as np

    from papers.ssd import engine, tree as tree_lib

    dc, new = sweep.dc, sweep.dc.max_new_tokens
    chains = [int(n.split("_")[1][1:]) for n in sweep.rows if n.startswith("chain") and n.endswith("_T0_b1")]
    k = (max(chains, key=lambda k: sweep.rows[f"chain_K{k}_T0_b1"]["tokens_per_s"]) if chains
         else sweep.report.data.get("best_k") or dc.ks[len(dc.ks) // 2])   # --invariant_only: the JSON's best K
    configs = dict(ar=engine.DecodeConfig("ar", new), chain=engine.DecodeConfig("chain", new, num_draft=k),
                   tree=engine.DecodeConfig("tree", new, tree=tree_lib.tree_from_branching(tuple(dc.tree_branching)),
                                            tree_children="topk"))
    draft_split = inference_split(draft, sweep.dtype) + (draft.config,)
    result = dict(sequences=len(sweep.prompts), max_new_tokens=new, num_draft=k, dtype=str(sweep.dtype),
                  invariant_gemv=gemv, errors=dict(errors or {}), tokens_per_s={}, identical={}, tokens_per_s_b1={})
    for numerics in ("default", "invariant"):
        overrides = dict(numerics=numerics, invariant_gemv=gemv)
        tg, ts = inference_split(target, sweep.dtype, **overrides)
        models = ((tg, ts, dataclasses.replace(target.config, **overrides)), draft_split)
        outs, speeds = {}, {}
        for name, config in configs.items():
            row = run_decode(models, config, [sweep.prompts], dc.repeats, dtype=sweep.dtype)
            outs[name], speeds[name] = row["last_tokens"], row["tokens_per_s"]
        result["tokens_per_s"][numerics] = speeds
        result["identical"][numerics] = {name: float((outs[name] == outs["ar"]).all(-1).mean())
                                         for name in ("chain", "tree")}
        # Batch 1 (the latency case): AR and chain over the batch-1 prompts; the default mode's rows come from
        # this run's sweep (or, with --invariant_only, the JSON's) when it has them.
        sets = [sweep.prompts[i:i + 1] for i in range(dc.batch1_prompts)]
        measured = {row["name"]: row for row in sweep.report.data.get("decode", [])}
        b1 = {}
        for name, row_name in (("ar", "ar_T0_b1"), ("chain", f"chain_K{k}_T0_b1")):
            if numerics == "default" and row_name in measured:
                b1[name] = measured[row_name]["tokens_per_s"]
            else:
                b1[name] = run_decode(models, configs[name], sets, dc.repeats, dtype=sweep.dtype)["tokens_per_s"]
        result["tokens_per_s_b1"][numerics] = b1
        sweep.report.update(invariant_numerics=result)
        print(f"greedy SD == AR ({numerics} numerics):", result["identical"][numerics], "tok/s",
              {n: round(v) for n, v in speeds.items()}, flush=True)
    pooled = lambda numerics: float(np.mean(list(result["identical"][numerics].values())))
    cost = lambda table: {name: table["invariant"][name] / table["default"][name] for name in table["default"]}
    result.update(cost_tokens_per_s_ratio=cost(result["tokens_per_s"]),
                  cost_tokens_per_s_ratio_b1=cost(result["tokens_per_s_b1"]))
    sweep.report.update(invariant_numerics=result, greedy_identical_bf16=pooled("invariant"),
                        greedy_identical_bf16_default=pooled("default"))
    print(f"greedy_identical_bf16 = {pooled('invariant'):.3f} (default numerics {pooled('default'):.3f}); "
          f"invariant/default tokens/s {result['cost_tokens_per_s_ratio']}, batch 1 "
          f"{result['cost_tokens_per_s_ratio_b1']}", flush=True)
    return result


def invariant_phase(sweep: Sweep, target, draft, gemv: str = "auto") -> None:
    """invariant_greedy_identity; if the Pallas row-tiled GEMV fails (it has not run on a GPU before), the error is
    recorded and the phase re-runs with the same tiling as XLA dots ("tiled"); a failure never stops the run."""
    import jax

    attempts = [gemv] + (["tiled"] if gemv != "tiled" and jax.default_backend() == "gpu" else [])
    errors = {}
    for attempt in attempts:
        try:
            invariant_greedy_identity(sweep, target, draft, attempt, errors)
            return
        except Exception as e:  # the sweep's figures above must survive
            errors[attempt] = f"{type(e).__name__}: {e}"[:2000]
            sweep.report.update(invariant_numerics=dict(errors=errors))
            print(f"invariant numerics phase failed (invariant_gemv={attempt}):", e, flush=True)


def near_tie_gaps(target, prompts, outputs) -> list[dict]:
    """For every greedy SD output that differs from greedy AR: the first differing step and the f32 target's
    logit gap there between the two tokens (a near-tie means bf16 rounding, a large gap a bug)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    graphdef, state = nnx.split(target)
    forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens)[0].astype(jnp.float32))
    if not outputs:   # every decode config was skipped by --budget_s
        return []
    width = prompts.shape[1] + next(iter(outputs.values())).shape[1]   # every run emits max_new_tokens
    found = []
    for name, tokens in outputs.items():
        reference = greedy_ar_reference(name, outputs)
        if reference is None:
            continue
        for row in np.flatnonzero((tokens != reference).any(-1))[:4]:
            step = int(np.argmax(tokens[row] != reference[row]))
            context = np.concatenate([prompts[row], reference[row, :step]])
            padded = np.zeros((1, width), np.int32)
            padded[0, :len(context)] = context  # causal: the padding cannot change earlier logits
            logits = np.asarray(forward(state, jnp.asarray(padded)))[len(context) - 1]
            found.append(dict(run=name, prompt=int(row), step=step, ar_token=int(reference[row, step]),
                              sd_token=int(tokens[row, step]),
                              logit_gap=float(logits[reference[row, step]] - logits[tokens[row, step]]),
                              top2_gap=float(np.diff(np.sort(logits)[-2:])[0])))
    return found
