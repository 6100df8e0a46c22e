"""The whole D-MPC experiment for one environment, from nothing: expert -> datasets -> models -> scores.

    result = run_env("hopper", config, workdir)

1. Reference returns: a uniform-random policy, and the expert (best PPO snapshot) with its stochastic policy.
2. Datasets the D4RL way: `medium` (the PPO snapshot at ~1/3 of the expert's return, stochastic rollouts) and
   `medium_replay` (rollouts of every snapshot up to medium, a stand-in for the replay buffer, which on-policy
   PPO does not keep), written as TFDS array_record with manifests and read back from disk.
3. Per dataset: all heads trained by core.train on the same segments; D-MPC, its one-step-dynamics and
   Gaussian-proposal ablations, MBOP-style and BC evaluated in one program on the same reset states.
4. walker2d (or the toy env) only: novel rewards at planning time, and the broken ankle (play data in the
   defective env, fine-tune only the dynamics, D-MPC before vs after).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from core import metrics as metrics_lib
from core import train as train_lib
from papers.dmpc import data as data_lib
from papers.dmpc import envs as envs_lib
from papers.dmpc import diagnostics, evaluation, experts, models, planning
from papers.dmpc.segments import Segments


def expert_path(workdir: str) -> str:
    return os.path.join(workdir, "expert.pkl")


def make_datasets(env, config, workdir: str, log: Callable = print, train_if_missing: bool = True,
                  expert_file: str | None = None) -> dict:
    """Steps 1-2; returns {"paths": {kind: dir}, "reference": (R_random, R_expert), "expert_run": ExpertRun, ...}.
    The PPO snapshots come from workdir/expert.pkl (trained here first when missing and `train_if_missing`);
    datasets already on disk for the same snapshots are not rebuilt. Every snapshot is scored in one rollout
    (`experts.evaluate_snapshots`), then the fresh expert episodes, `medium` and every `medium_replay` policy
    share the next rollouts (one max_steps pass per `data.chunk` episodes). Episode counts are raised to reach
    D4RL's dataset sizes (`data.medium_transitions`, `data.replay_transitions`) from each behaviour policy's mean
    episode length in the scoring rollout; datasets built for other targets are rebuilt."""
    name, seed, T = env.name, config.seed, config.max_steps
    data_dir = os.path.join(workdir, "data")
    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(seed)
    path = expert_file or expert_path(workdir)
    if os.path.exists(path):
        run = experts.load_run(path, env, config.ppo)
        log(f"  {name}: {len(run.snapshots)} PPO snapshots ({run.snapshots[-1][0]:,} env steps) from {path}")
    elif train_if_missing:
        run = experts.train_expert(env, config.ppo, seed, log, path=path)
    else:
        raise FileNotFoundError(f"No PPO snapshots at {path}; run the experts stage first "
                                "(python -m benchmarks.dmpc --stage experts) or carry expert.pkl into this workdir.")
    paths = {kind: os.path.join(data_dir, f"{name}_{kind}") for kind in config.datasets}
    steps = [s for s, _ in run.snapshots]
    done = all(os.path.exists(os.path.join(p, "manifest.json")) for p in paths.values())
    targets = {k: int(config.data[k]) for k in ("medium_transitions", "replay_transitions")}
    if done:
        manifest = data_lib.read_manifest(next(iter(paths.values())))
        stored = manifest.get("collection", {})
        done = ([s["env_steps"] for s in manifest["ppo_snapshots"]] == steps
                and all(stored.get(k, 0) == v for k, v in targets.items()))
    if done:
        reference = (manifest["reference_returns"]["random"], manifest["reference_returns"]["expert"])
        run.returns = np.array([s["eval_return"] for s in manifest["ppo_snapshots"]])
        medium = run.medium_index(config.data.medium_fraction, reference[0])
    else:
        d = config.data
        phase = time.perf_counter()
        experts.evaluate_snapshots(env, run, jax.random.fold_in(key, 1), d.snapshot_episodes, d.reference_episodes,
                                   T, d.chunk)
        scored_s = time.perf_counter() - phase
        random_return = float(run.returns_random)
        medium = run.medium_index(d.medium_fraction, random_return)
        cap = int(d.max_episodes)
        medium_episodes = episodes_for(targets["medium_transitions"], run.lengths[medium], d.medium_episodes, cap)
        per = episodes_for(targets["replay_transitions"], run.lengths[: medium + 1].sum(),
                           max(1, math.ceil(d.replay_episodes / (medium + 1))), max(1, cap // (medium + 1)))
        groups = ([(run.expert_index, d.reference_episodes), (medium, medium_episodes)]
                  + [(i, per) for i in range(medium + 1)])
        phase = time.perf_counter()
        expert_eps, medium_eps, *replay = experts.collect_from_snapshots(env, run, groups, jax.random.fold_in(key, 2),
                                                                         T, d.chunk)
        collected_s = time.perf_counter() - phase
        reference = (random_return, float(expert_eps.returns.mean()))
        common = {"seed": seed, "max_steps": T, "env_repr": repr(env), "ppo": config.ppo.to_dict(),
                  "ppo_snapshots": [{"env_steps": s, "eval_return": float(r)} for s, r in zip(steps, run.returns)],
                  "snapshot_eval_episodes": d.snapshot_episodes,
                  "collection": {**targets, "medium_episodes": medium_episodes, "replay_episodes_per_snapshot": per},
                  "reference_returns": {"random": reference[0], "expert": reference[1]}}
        replay_eps = replay[0]
        for part in replay[1:]:
            replay_eps = replay_eps.concat(part)
        built = {"medium": (medium_eps, [medium]), "medium_replay": (replay_eps, list(range(medium + 1)))}
        # both kinds, whichever this command evaluates: the rollouts made them anyway, and a later
        # `evaluate/<other kind>` on this machine then finds its dataset instead of rebuilding everything
        phase = time.perf_counter()
        for kind, (eps, behaviour) in built.items():
            data_lib.write_dataset(eps, name, kind, data_dir, {**common, "behaviour_snapshots": behaviour})
        # where a data build's time goes (GPU commands are 10 minutes; the build shares one with training)
        log(f"  {name}: data build: snapshots scored {scored_s:.0f}s, episodes collected {collected_s:.0f}s "
            f"({sum(n for _, n in groups):,} episodes), written {time.perf_counter() - phase:.0f}s")
    log(f"  {name}: random {reference[0]:.1f}, expert {reference[1]:.1f} (snapshot {run.expert_index} of "
        f"{len(steps)}), medium snapshot {medium} (return {run.returns[medium]:.1f}); PPO {run.seconds:.0f}s")
    return {"paths": paths, "reference": reference, "expert_run": run, "medium_snapshot": medium,
            "expert_params": run.params(run.expert_index),
            "dataset_sha256": {k: data_lib.read_manifest(p)["files"] for k, p in paths.items()}}


def episodes_for(target_transitions: int, mean_length: float, minimum: int, cap: int) -> int:
    """Episodes of a policy whose episodes last `mean_length` steps on average that make about
    `target_transitions` transitions (D4RL's dataset sizes), at least `minimum` and at most `cap`; a target of 0
    keeps `minimum`."""
    if target_transitions <= 0:
        return int(minimum)
    return int(min(cap, max(minimum, math.ceil(target_transitions / max(float(mean_length), 1.0)))))


def split_episodes(episodes: data_lib.Episodes, held_out_fraction: float, seed: int, min_length: int = 1):
    """(training episodes, held-out episodes or None): a seeded random `held_out_fraction` of the episodes, drawn
    among those of at least `min_length` steps (so each holds a segment) and leaving at least one such episode to
    train on, is kept out of training."""
    eligible = np.flatnonzero(episodes.lengths >= min_length)
    count = min(int(round(held_out_fraction * len(episodes.lengths))), len(eligible) - 1)
    if count < 1:
        return episodes, None
    held = np.sort(np.random.default_rng([seed, 17]).permutation(eligible)[:count])
    kept = np.setdiff1d(np.arange(len(episodes.lengths)), held)
    return episodes.select(kept), episodes.select(held)


def model_dims(env, config) -> models.ModelDims:
    m = config.model
    return models.ModelDims(obs_dim=env.observation_size, action_dim=env.action_size, history=m.history,
                            horizon=m.horizon, hidden=m.hidden, depth=m.depth,
                            prediction=m.get("prediction", "epsilon"), ensemble=m.get("ensemble", 1),
                            dynamics_arch=m.get("dynamics_arch", "mlp"))


def train_models(env, segments: Segments, config, workdir: str, weights: dict | None = None,
                 init_model: models.DMPCModels | None = None, num_steps: int | None = None,
                 held_out: Segments | None = None, fingerprint: dict | None = None) -> tuple[models.DMPCModels, dict]:
    """All heads (or those with weight > 0) through core.train.train; returns the trained model in f32 and, with
    `held_out` segments and config.data.select_heads_on_held_out, the per-head early-stopping record (each head
    keeps its parameters from the evaluation, every train.eval_every steps, with its lowest held-out loss).

    With a `fingerprint` (what the training depends on: data, steps, model), a run killed part-way resumes from
    its last checkpoint (every train.resume_every steps) with its head selection as it stood there; a workdir
    holding another fingerprint's run, or none, is cleared first, so a stale checkpoint is never restored."""
    (trained, selection), = train_seed_models(env, segments, config, workdir, 1, weights, init_model, num_steps,
                                              held_out, fingerprint)
    return trained, selection


def train_seed_models(env, segments: Segments, config, workdir: str, seeds: int, weights: dict | None = None,
                      init_model: models.DMPCModels | None = None, num_steps: int | None = None,
                      held_out: Segments | None = None, fingerprint: dict | None = None
                      ) -> list[tuple[models.DMPCModels, dict]]:
    """`train_models` for `seeds` independent training seeds at once, as one vmapped program (core.train's
    `train.members`): seed i initialises with config.seed + i and draws its batches and diffusion noise from
    its own streams, and ends where a run of that seed alone ends (seed 0 is `train_models`' run). Each seed
    keeps its own head selection. Returns [(model, selection)] per seed."""
    schedule = evaluation.noise_schedule(config)
    if init_model is not None and seeds != 1:
        raise ValueError("Fine-tuning (init_model) trains one model; use seeds=1.")
    if init_model is None:
        built = []
        for i in range(seeds):
            one = models.DMPCModels(model_dims(env, config), nnx.Rngs(config.seed + i))
            models.set_statistics(one, segments.statistics(seed=config.seed))
            built.append(one)
        model = built[0] if seeds == 1 else train_lib.stack_models(built)
    else:
        model = init_model
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.train.members = seeds
    if num_steps is not None:
        cfg.train.num_steps = num_steps
        cfg.optim.total_steps = num_steps
    resumable = fingerprint is not None
    every = int(cfg.train.get("resume_every", 0)) if resumable else 0
    cfg.train.checkpoint_every = every if every > 0 else cfg.train.num_steps
    batch_size = config.data.batch_size

    def seed_batch(i, step):
        return segments.batch(np.random.default_rng([config.train.data_seed + i, step]), batch_size)

    def batches(step):       # with seeds, every leaf [batch, seeds, ...] (core.train's members layout)
        if seeds == 1:
            return seed_batch(0, step)
        return jax.tree.map(lambda *xs: np.stack(xs, axis=1), *(seed_batch(i, step) for i in range(seeds)))
    fingerprint = json.loads(json.dumps({**(fingerprint or {}), "train": cfg.train.to_dict(),
                                         "optim": cfg.optim.to_dict(), "weights": weights}, sort_keys=True))
    stamp = os.path.join(workdir, "fingerprint.json")
    if not resumable or metrics_lib.read_json(stamp, None) != fingerprint:
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir, exist_ok=True)
    metrics_lib.write_json(stamp, fingerprint)
    selectors = None
    if held_out is not None and config.data.get("select_heads_on_held_out", False):
        held_batch = held_out.batch(np.random.default_rng(config.seed + 5), batch_size)
        selectors = models.SeedHeadSelectors([
            models.HeadSelector(held_batch, schedule, jax.random.key(config.seed + 5),
                                save_path=(os.path.join(workdir, "head_selection.pkl" if i == 0 else
                                                        f"head_selection_{i}.pkl") if resumable else None),
                                save_every=cfg.train.checkpoint_every) for i in range(seeds)])
    result = train_lib.train(cfg, workdir, model, models.make_loss_fn(schedule, weights), batches,
                             eval_fn=selectors.eval_fn if selectors else None)
    trained = train_lib.merge_model(result.graphdef, result.state)
    per_seed = [trained] if seeds == 1 else [train_lib.member_model(trained, i) for i in range(seeds)]
    out = []
    for i, one in enumerate(per_seed):
        one.eval()
        out.append((one, selectors.selectors[i].apply(one) if selectors else {}))
    return out


def run_env(env_name: str, config, workdir: str, log: Callable = print, models_out: dict | None = None,
            checkpoint_fn: Callable[[dict], None] | None = None, stages: tuple[str, ...] = ("evaluate", "ankle"),
            expert_file: str | None = None, model_file: str | None = None, previous: dict | None = None,
            train_if_missing: bool = True, planner_report: bool = False, gif_path: str | None = None) -> dict:
    """Steps 1-4 for one env; returns a JSON-able dict of every measured number.

    stages: "evaluate" (datasets, models, every planner on every dataset, novel rewards on the adaptation env)
    and/or "ankle" (the broken-ankle experiment, adaptation env only). The PPO snapshots are read from
    `expert_file` (default workdir/expert.pkl; trained first when missing if `train_if_missing`).
    `model_file`: the evaluate stage saves the model trained on config.ankle.dataset there (adaptation env) and
    an ankle-only run loads it, with the references from `previous` (the evaluate stage's result), so a later
    command needs no retraining. `models_out` receives the trained models per dataset;
    `checkpoint_fn(partial_result)` runs after each dataset. `planner_report`: on the adaptation env, once the
    model of config.ankle.dataset is evaluated, also time D-MPC's control step batched over the evaluation
    episodes and (with `gif_path`) draw its first episode (`planner_speed_and_gif`)."""
    started = time.perf_counter()
    unknown = set(stages) - {"evaluate", "ankle"}
    if unknown:
        raise ValueError(f"Unknown stages {sorted(unknown)}; choose from evaluate, ankle.")
    env = envs_lib.make(env_name)
    out = dict(previous or {}, env=env_name)
    workdir_expert = expert_file or expert_path(workdir)
    trained = {}
    if "evaluate" in stages:
        made = make_datasets(env, config, workdir, log, train_if_missing, expert_file=workdir_expert)
        reference = made["reference"]
        run = made["expert_run"]
        out.update({"reference_returns": {"random": reference[0], "expert": reference[1]},
                    "ppo": {"seconds": run.seconds, "finished": run.finished,
                            "snapshots": [{"env_steps": s, "eval_return": float(r)}
                                          for (s, _), r in zip(run.snapshots, run.returns)],
                            "medium_snapshot": made["medium_snapshot"], "expert_snapshot": run.expert_index},
                    "datasets": dict(out.get("datasets", {}))})      # rows of datasets not rerun stay
        trained = _evaluate_datasets(env, made, config, workdir, out, log, models_out, checkpoint_fn, model_file,
                                     (gif_path,) if planner_report else None)
    if "ankle" in stages and env_name == config.adaptation_env:
        if config.ankle.dataset in trained:
            model = trained[config.ankle.dataset]
        else:
            if not previous or "reference_returns" not in previous:
                raise ValueError(f"The ankle stage of {env_name} needs the evaluate stage's result (reference "
                                 "returns); run --stage evaluate first and keep its JSON.")
            run = experts.load_run(workdir_expert, env, config.ppo)
            ref = previous["reference_returns"]
            expert_index = previous["ppo"]["expert_snapshot"]
            made = {"reference": (ref["random"], ref["expert"]), "expert_run": run,
                    "expert_params": run.params(expert_index)}
            model = models.load_params(models.DMPCModels(model_dims(env, config), nnx.Rngs(config.seed)),
                                       model_file or os.path.join(workdir, "model.npz"))
            model.eval()
        out["broken_ankle"] = broken_ankle_experiment(env_name, model, made, config, workdir, log)
        if models_out is not None:
            models_out.setdefault(config.ankle.dataset, model)
    out["seconds"] = out.get("seconds", 0.0) + time.perf_counter() - started
    return out


def _evaluate_datasets(env, made, config, workdir, out, log, models_out, checkpoint_fn, model_file=None,
                       planner_report=None) -> dict:
    env_name, reference = env.name, made["reference"]
    trained = {}
    for i, kind in enumerate(config.datasets):
        t0 = time.perf_counter()
        source = data_lib.load_dataset(made["paths"][kind], env_name=env_name, kind=kind,
                                       obs_dim=env.observation_size, action_dim=env.action_size)
        episodes = data_lib.to_episodes(source)
        load_s = time.perf_counter() - t0
        train_eps, held_eps = split_episodes(episodes, config.data.get("held_out_fraction", 0.0), config.seed,
                                             min_length=config.model.horizon)
        make_segments = lambda eps: Segments(eps, config.model.history, config.model.horizon, config.value.discount,
                                             config.value.terminal_penalty)
        segments = make_segments(train_eps)
        # held-out episodes: half select each head's early-stopping point, the other half score the fit
        # diagnostics, which would read optimistic on the episodes that did the selecting
        select_eps, test_eps = None, held_eps
        if held_eps is not None and config.data.get("select_heads_on_held_out", False):
            test_eps, select_eps = split_episodes(held_eps, 0.5, config.seed + 1, min_length=config.model.horizon)
        seeds = int(config.get("seeds", 1))
        seed_models = train_seed_models(env, segments, config, os.path.join(workdir, f"train_{kind}"), seeds,
                                        fingerprint={"dataset_sha256": made["dataset_sha256"][kind],
                                                     "model": config.model.to_dict(), "seed": config.seed,
                                                     "data": config.data.to_dict(), "value": config.value.to_dict()},
                                        held_out=None if select_eps is None else make_segments(select_eps))
        # seed 0's model is the one every single-model output uses: fit diagnostics, novel rewards, the ankle
        # stage's saved model, the planner report and GIF
        model, selection = seed_models[0]
        trained[kind] = model
        # the fit diagnostics on episodes the models never saw (on small datasets every head memorises its data)
        fit_segments = segments if test_eps is None else make_segments(test_eps)
        fit_batch = fit_segments.batch(np.random.default_rng(config.seed + 7), 512)
        schedule = evaluation.noise_schedule(config)
        fit = diagnostics.proposal_fit(model, fit_batch, jax.random.key(config.seed + 7), config.plan, schedule)
        dynamics_fit = diagnostics.dynamics_fit(model, fit_batch, jax.random.key(config.seed + 8), config.plan, schedule)
        # the objective on held-out and on training segments: the planner's argmax exploits where J overfits
        value_fit = {"held_out" if test_eps is not None else "training": diagnostics.value_fit(
            model, fit_batch, jax.random.key(config.seed + 9), config.plan, schedule)}
        if test_eps is not None:
            value_fit["training"] = diagnostics.value_fit(model, segments.batch(np.random.default_rng(config.seed + 7), 512),
                                                       jax.random.key(config.seed + 9), config.plan, schedule)
        # the argmax ranks candidates from one state: each dynamics model's ranking against simulated futures
        num_ranking_states = int(config.get("ranking_states", 32))
        ranking = diagnostics.candidate_ranking(env, model, fit_batch, jax.random.key(config.seed + 10), config.plan,
                                             schedule, num_states=num_ranking_states)
        if model_file and env_name == config.adaptation_env and kind == config.ankle.dataset:
            models.save_params(model, model_file)     # now, so a stage killed later still leaves it
        # every dataset's seed-0 model (24 MB on the GPU config) in the workdir, for planner studies off the GPU
        models.save_params(model, os.path.join(workdir, f"model_{kind}.npz"))
        if models_out is not None:
            models_out[kind] = model
        t1 = time.perf_counter()
        reward_fns = envs_lib.novel_rewards(env_name) if env_name == config.adaptation_env else None

        def spec_for(seed_model):
            spec = {m: (m, seed_model, planning.learned_objective) for m in config.methods}
            for r in reward_fns or ():       # novel rewards ride along in the same program (no retraining)
                spec[f"dmpc_{r}"] = ("dmpc", seed_model, evaluation.novel_objective(env_name, r, config.value.discount,
                                                                         config.value.terminal_penalty))
            return spec
        # every seed's model through the same planners in one program, each seed on its own episodes
        per_seed = evaluation.evaluate_seed_models(env, spec_for, [m for m, _ in seed_models],
                                        jax.random.fold_in(jax.random.key(config.seed), 1000 + i), config, reward_fns)
        results = per_seed[0]
        returns = {m: [r[m]["return"] for r in per_seed] for m in config.methods}
        # the same ranking on the states each planner's own closed loop reached (seed 0's first episodes): the
        # argmax acts there, off the data, where a dynamics model can be exploited
        ranking_closed_loop = {
            m: diagnostics.candidate_ranking(env, model, diagnostics.visited_states(results[m], num_ranking_states),
                                          jax.random.key(config.seed + 11), config.plan, schedule,
                                          num_states=num_ranking_states)
            for m in ("dmpc", "onestep") if m in results}
        row = {"dataset_episodes": int(len(episodes.lengths)), "dataset_steps": int(episodes.lengths.sum()),
               "dataset_sha256": made["dataset_sha256"][kind],
               "dataset_return": evaluation.summary(episodes.returns), "load_s": load_s, "train_s": t1 - t0 - load_s,
               "eval_s": time.perf_counter() - t1,
               "train_steps": config.train.num_steps, "train_episodes": int(len(train_eps.lengths)),
               "fit_on": "training episodes" if test_eps is None else f"{len(test_eps.lengths)} held-out episodes",
               "selection_episodes": 0 if select_eps is None else int(len(select_eps.lengths)),
               "proposal_fit_mse": fit, "dynamics_fit_mse": dynamics_fit, "value_fit": value_fit,
               "candidate_ranking": ranking, "candidate_ranking_closed_loop": ranking_closed_loop,
               # seed 0's executed actions, mean square per step: a planner that ranks by J's exact control cost
               # alone picks small actions
               "executed_action_sq": {m: float(np.mean(results[m]["action_sq"] / np.maximum(results[m]["length"], 1)))
                                      for m in config.methods},
               "head_selection": selection, "seeds": seeds, "model_prediction": config.model.prediction,
               "dynamics_arch": config.model.get("dynamics_arch", "mlp"),
               "head_selection_other_seeds": [sel for _, sel in seed_models[1:]]}
        for m in config.methods:
            row[m] = evaluation.seed_scores(returns[m], reference, env_name)
        if i == 0:
            out["first_episode_qpos"] = {m: results[m]["first_episode_qpos"].tolist()
                                         for m in ("dmpc", "bc") if m in results}
        if reward_fns:     # per seed over episodes; with several seeds, the seeds' means ± s.e. over seeds
            row["novel_rewards"] = {
                p: {k: evaluation.summary(v) if len(per_seed) == 1 else evaluation.summary([np.mean(r[p][k]) for r in per_seed])
                    for k, v in res.items() if k not in planning.FIRST_EPISODES_KEYS}
                for p, res in results.items() if p.startswith("dmpc") or p == "bc"}
        out["datasets"][kind] = row
        log(f"  {env_name}-{kind}: " + "  ".join(f"{m} {row[m]['normalized_own']['mean']:.1f}" for m in config.methods)
            + f"  (own-reference normalised, {seeds} seed{'s' if seeds > 1 else ''}; load {load_s:.0f}s, train {row['train_s']:.0f}s, eval {row['eval_s']:.0f}s; first-action "
            f"MSE: diffusion sample {fit['diffusion_one_sample']:.3f}, BC {fit['bc']:.3f}, marginal {fit['marginal']:.3f}; "
            f"{config.model.horizon}-step state MSE: diffusion {dynamics_fit['diffusion']:.3f}, one-step MLP "
            f"{dynamics_fit['onestep']:.3f}; value 1-R^2 on predicted futures: "
            + ", ".join(f"{k} {v['predicted_future']['mse_over_variance']:.3f}" for k, v in value_fit.items())
            + "; within-state ranking vs simulated futures, Spearman / argmax pick in s.d.: " + ", ".join(
                f"{k} {ranking[k]['spearman']:.2f} / {ranking[k]['argmax_gain_sd']:+.2f}"
                for k in ("diffusion", "onestep", "oracle")) + "".join(
                f"; on {m}'s own visited states: " + ", ".join(
                    f"{k} {r[k]['spearman']:.2f} / {r[k]['argmax_gain_sd']:+.2f}" for k in ("diffusion", "onestep", "oracle"))
                for m, r in ranking_closed_loop.items())
            + "; executed mean squared action: "
            + ", ".join(f"{m} {v:.3f}" for m, v in row["executed_action_sq"].items()) + ")"
            + "".join(f"; {h} best at step {r['best_step']} ({r['best_loss']:.4g} vs last {r['last_loss']:.4g})"
                      for h, r in selection.items() if h in ("value", "proposal", "dynamics")))
        if checkpoint_fn is not None:       # before the planner report, so a kill during it keeps the row
            checkpoint_fn(out)
        if planner_report is not None and env_name == config.adaptation_env and kind == config.ankle.dataset:
            out.update(evaluation.planner_speed_and_gif(env, model, config, results["dmpc"]["first_episode_qpos"],
                                             planner_report[0]))
            log(f"  {env_name}: D-MPC plans a control step in {out['plan_ms_per_step']:.1f} ms for "
                f"{out['plan_batch_episodes']} episodes at once"
                + ("; its variants {variants}: {batched:.1f} ms batched vs {one_call_each:.1f} ms one call each".format(
                    **out["variants_ms_per_step"]) if "variants_ms_per_step" in out else ""))
            if checkpoint_fn is not None:
                checkpoint_fn(out)
    return trained


def broken_ankle_experiment(env_name, model, made, config, workdir, log) -> dict:
    """Play data (the expert's stochastic policy) in the defective env; fine-tune only the dynamics."""
    broken = envs_lib.make(env_name, config.ankle.gear_scale)
    play = data_lib.collect(broken, made["expert_run"].policy_fn, made["expert_params"],
                            jax.random.key(config.seed + 11), config.ankle.play_episodes, config.max_steps)
    path = data_lib.write_dataset(play, env_name, "play", os.path.join(workdir, "data_broken_ankle"),
                                  {"seed": config.seed, "gear_scale": config.ankle.gear_scale, "env_repr": repr(broken)})
    segments = Segments(data_lib.to_episodes(data_lib.load_dataset(path, env_name=env_name, kind="play")),
                        config.model.history, config.model.horizon, config.value.discount, config.value.terminal_penalty)
    graphdef, state = nnx.split(model)
    finetuned, _ = train_models(broken, segments, config, os.path.join(workdir, "finetune_ankle"),
                             weights={"dynamics": 1.0}, init_model=nnx.merge(graphdef, jax.tree.map(jnp.copy, state)),
                             num_steps=config.ankle.finetune_steps)
    spec = {"before": ("dmpc", model, planning.learned_objective),
            "after": ("dmpc", finetuned, planning.learned_objective)}
    if "dmpc_softmax" in config.methods:        # the ranking variant that led on the six datasets (README)
        spec.update({"before_softmax": ("dmpc_softmax", model, planning.learned_objective),
                     "after_softmax": ("dmpc_softmax", finetuned, planning.learned_objective)})
    results = evaluation.evaluate_models(broken, spec, jax.random.key(config.seed + 13), config)
    reference = made["reference"]
    out = {"gear_scale": config.ankle.gear_scale, "play_episodes": int(len(play.lengths)),
           "play_return": evaluation.summary(play.returns), **{k: evaluation.scores(v["return"], reference, env_name) for k, v in results.items()}}
    log(f"  broken ankle (gear x{config.ankle.gear_scale}): D-MPC {out['before']['normalized_own']['mean']:.1f} -> "
        f"{out['after']['normalized_own']['mean']:.1f} after fine-tuning the dynamics on {out['play_episodes']} play episodes")
    return out
