"""Analysis of a sweep's stored points: the per-recipe fits, asymptotes, data efficiency and distillation
retention that benchmarks/infinite_compute.py reports (works on a partial sweep: missing parts are None)."""

from __future__ import annotations

import numpy as np

from papers.infinite_compute import data as data_lib
from papers.infinite_compute import fits
from papers.infinite_compute import recipe


def distill_retention(single_loss: float, student_loss: float, ensemble_loss: float) -> float | None:
    """The paper's retained share of the ensemble's gain, (single - student) / (single - ensemble): 1 when the
    student matches its teacher ensemble, 0 when it is no better than the single model; None when the
    ensemble does not beat the single model (no gain to retain)."""
    gain = single_loss - ensemble_loss
    if not (np.isfinite(gain) and gain > 0 and np.isfinite(student_loss)):
        return None
    return float((single_loss - student_loss) / gain)


def analyze(config, workdir: str) -> dict:
    """Fits and headline numbers from the stored points (works on a partial sweep: missing parts are None)."""
    store = recipe.PointStore(workdir)
    rows = [r for r in store.all() if "recipe" in r and "validation_loss" in r]
    sizes = list(config.sizes)
    params = {r["size"]: r["non_embedding_params"] for r in rows}
    manifest = data_lib.load_manifest(config.data.dir)
    tokens = manifest["counts"]["train"]["tokens"]
    out: dict = dict(train_tokens=tokens, sizes={}, notes=[])

    def select(size, name, **match):
        return [r for r in rows if r["size"] == size and r["recipe"] == name
                and all(r[k] == v for k, v in match.items())]

    def best_with_replicates(size, name):
        main = [r for r in select(size, name, seed=0, train_tokens=0)]
        if not main:
            return None, []
        b = min(main, key=lambda r: r["validation_loss"])
        reps = [r["validation_loss"] for r in select(size, name, train_tokens=0) if
                (r["learning_rate"], r["weight_decay"], r["epochs"]) == (b["learning_rate"], b["weight_decay"],
                                                                         b["epochs"]) and np.isfinite(r["validation_loss"])]
        if not reps:
            return None, []
        return b, reps

    for size in sizes:
        if size not in params:
            continue
        std, std_reps = best_with_replicates(size, "standard")
        reg, reg_reps = best_with_replicates(size, "regularized")
        out["sizes"][size] = dict(
            non_embedding_params=params[size], tokens_per_param=tokens / params[size],
            standard=None if std is None else dict(loss=std["validation_loss"], epochs=std["epochs"],
                                                   learning_rate=std["learning_rate"], replicates=std_reps),
            regularized=None if reg is None else dict(loss=reg["validation_loss"], epochs=reg["epochs"],
                                                      learning_rate=reg["learning_rate"],
                                                      weight_decay=reg["weight_decay"], replicates=reg_reps),
            standard_by_epochs={f"lr{r['learning_rate']:g}_e{r['epochs']:g}": r["validation_loss"]
                                for r in select(size, "standard", seed=0)})

    def fit_recipe(name):
        pts = [(out["sizes"][s]["non_embedding_params"], out["sizes"][s][name]["replicates"])
               for s in out["sizes"] if out["sizes"][s].get(name)]
        if len(pts) < 3:
            return None
        try:
            return fits.bootstrap_fit([p[0] for p in pts], [p[1] for p in pts], seed=1)
        except ValueError as error:
            out["notes"].append(f"{name} fit failed: {error}")
            return None

    std_fit, reg_fit = fit_recipe("standard"), fit_recipe("regularized")
    std_best = [out["sizes"][s]["standard"]["loss"] for s in out["sizes"] if out["sizes"][s].get("standard")]
    losses_std = [(out["sizes"][s]["non_embedding_params"], out["sizes"][s]["standard"]["loss"])
                  for s in out["sizes"] if out["sizes"][s].get("standard")]
    monotone = all(b[1] <= a[1] for a, b in zip(losses_std, losses_std[1:]))
    out["asymptote_standard"] = None if not std_best else dict(
        value=min(std_best), kind="best finite model (the standard recipe is non-monotone in N, as in the paper)"
        if not monotone else "best finite model", monotone_in_N=monotone, fit=std_fit)
    out["asymptote_regularized"] = None if reg_fit is None else dict(
        value=reg_fit["E"], interval=reg_fit["E_interval"], E_at_bound=reg_fit["E_at_bound"], fit=reg_fit)

    # Ensembles: K-fit per size, then the joint N -> infinity fit of the K -> infinity asymptotes.
    per_size = {}
    for size in sizes:
        record = store.get(f"ensemble_{size}")
        if record is None:
            continue
        subsets = {tuple(int(i) for i in k.split(",")): v for k, v in record["validation"].items()}
        try:
            per_size[size] = fits.ensemble_k_fit(subsets, record["members"], seed=2)
        except ValueError as error:
            out["notes"].append(f"ensemble fit {size}: {error}")
            continue
        per_size[size]["non_embedding_params"] = params[size]
        if "prose" in record:
            per_size[size]["prose_loss_by_K"] = [
                float(np.mean([v for k, v in record["prose"].items() if len(k.split(",")) == kk]))
                for kk in range(1, record["members"] + 1)]
    out["ensembles"] = per_size
    report = config.ensemble.report_size
    if report in per_size:
        out["asymptote_ensemble"] = dict(value=per_size[report]["E"], interval=per_size[report]["E_interval"],
                                         E_at_bound=per_size[report]["E_at_bound"],
                                         size=report, non_embedding_params=params[report])
    else:
        out["asymptote_ensemble"] = None
    if len(per_size) >= 3:
        xs = [per_size[s]["non_embedding_params"] for s in per_size]
        # The per-size K-asymptote intervals come from member orders; the joint interval resamples them.
        joint = fits.fit_power_law(xs, [per_size[s]["E"] for s in per_size])
        rng = np.random.default_rng(3)
        draws = []
        for _ in range(300):
            y = []
            for s in per_size:
                lo, hi = per_size[s]["E_interval"]
                y.append(rng.uniform(lo, hi) if np.isfinite(lo) else per_size[s]["E"])
            try:
                draws.append(fits.fit_power_law(xs, y).E)
            except ValueError:
                pass
        out["asymptote_joint"] = dict(value=joint.E, interval=fits.interval(draws), fit=joint.to_dict(),
                                      E_at_bound=fits.at_bound(joint, [per_size[s]["E"] for s in per_size]),
                                      interval_method="refits with each size's K-asymptote drawn uniformly "
                                                      "within its member-order interval")
    else:
        out["asymptote_joint"] = None

    # Data law of the standard recipe (best over N and epochs at each D), and the multipliers.
    by_tokens = {tokens: std_best and min(std_best)}
    for r in rows:
        if r["recipe"] == "data_law" and r["seed"] == 0:
            by_tokens[r["train_tokens"]] = min(by_tokens.get(r["train_tokens"], np.inf), r["validation_loss"])
    out["data_law"] = {str(k): v for k, v in sorted(by_tokens.items()) if v}
    out["data_efficiency"] = None
    if len([v for v in by_tokens.values() if v]) >= 3:
        try:
            law = fits.fit_power_law(list(by_tokens), list(by_tokens.values()))
            eff = {}
            for key in ("asymptote_regularized", "asymptote_ensemble", "asymptote_joint"):
                if out.get(key):
                    eff[key.replace("asymptote_", "")] = fits.data_efficiency(law, out[key]["value"], tokens)
            out["data_efficiency"] = dict(eff, standard_data_law=law.to_dict())
        except ValueError as error:
            out["notes"].append(f"data law fit failed: {error}")

    # Distillation: retention of the ensemble's gain over the best regularised single model.
    d = config.distill
    students = [r for r in rows if r["recipe"] == "distill"]
    ens = store.get(f"ensemble_{d.size}")
    reg = out["sizes"].get(d.size, {}).get("regularized")
    out["distill_retention"] = None
    if students and ens and reg:
        full = ",".join(str(i) for i in range(ens["members"]))
        ens_loss, reg_loss = ens["validation"][full], reg["loss"]
        teacher_self = ens["validation"]["0"]
        table = {f"{r['synthetic']}@{r['synthetic_fraction']:g}": r["validation_loss"] for r in students}
        ens_students = {k: v for k, v in table.items() if k.startswith("ensemble")}
        best_key = min(ens_students, key=ens_students.get) if ens_students else None
        value = None if best_key is None else distill_retention(reg_loss, ens_students[best_key], ens_loss)
        if best_key is not None and value is None:
            out["notes"].append(f"distill retention undefined: the ensemble ({ens_loss:.3f}) does not beat the "
                                f"single model ({reg_loss:.3f})")
        out["distill_retention"] = None if value is None else dict(
            value=value, definition="(single - student) / (single - ensemble); single = the best regularised "
            f"model of size {d.size}, ensemble = its K-member teacher", student=best_key,
            student_loss=ens_students[best_key], ensemble_loss=ens_loss, regularized_single_loss=reg_loss,
            all_students=table, self_distill_teacher_loss=teacher_self)
    return out
