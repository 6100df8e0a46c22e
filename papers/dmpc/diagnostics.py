"""Diagnostics of the learned D-MPC models, off the planner's hot path: how well the proposal, dynamics and value
fit held-out data, and how each dynamics model ranks the planner's candidates from one state against futures
simulated in the env (on the data's states, or on the states a policy's own rollouts reach).

    proposal_fit / dynamics_fit / value_fit(model, batch, key, cfg, schedule)      -> dict of errors
    candidate_ranking(env, model, {"history": ...}, key, cfg, schedule)            -> per-model ranking stats
    visited_states(planning.evaluate(...)[policy], num_states)                      -> a batch for it
    simulate_chunks(env, obs, actions[N, F, A])                                     -> true futures
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from papers.dmpc.planning import diffusion_actions, diffusion_states, learned_objective, onestep_states


def proposal_fit(model, batch: dict, key, cfg, schedule, samples: int = 16) -> dict:
    """How well each proposal matches the data's first action on `batch`'s segments, as mean squared errors:
    one diffusion sample, the mean of `samples` diffusion samples, BC, the Gaussian head's mean, and the data's
    own variance (`marginal`). A proposal that ignores the history scores about twice `marginal` with one
    sample; a faithful one about twice the conditional variance, which BC's error bounds from above."""
    histories = jnp.asarray(batch["history"])
    first = jnp.asarray(batch["actions"][:, 0])
    sample = jax.jit(jax.vmap(lambda h, k: diffusion_actions(model, h, k, samples, cfg, schedule)[:, 0]))
    drawn = sample(histories, jax.random.split(key, histories.shape[0]))            # [B, samples, A]
    mse = lambda a: float(jnp.mean(jnp.square(a - first)))
    return {"diffusion_one_sample": mse(drawn[:, 0]), f"diffusion_mean_of_{samples}": mse(drawn.mean(1)),
            "bc": mse(model.bc_action(histories)), "gaussian_mean": mse(model.gaussian_params(histories)[0][:, :first.shape[-1]]),
            "marginal": mse(first.mean(0)), "saturated_fraction": float(jnp.mean(jnp.abs(drawn) > 0.99)),
            "segments": int(histories.shape[0])}


def dynamics_fit(model, batch: dict, key, cfg, schedule) -> dict:
    """How well each dynamics model predicts the data's next F states from the data's actions on `batch`'s
    segments: mean squared error in normalised state units (per dimension, averaged over the F steps and at
    the last one) of one diffusion sample (`cfg.dynamics_steps` DDIM steps, as the planner draws it) and of the
    one-step MLP rolled out F steps."""
    histories, actions = jnp.asarray(batch["history"]), jnp.asarray(batch["actions"])
    future = model.norm(jnp.asarray(batch["future"]))
    sample = jax.jit(jax.vmap(lambda h, a, k: diffusion_states(model, h, a[None], k, cfg, schedule)[0]))
    predicted = {"diffusion": sample(histories, actions, jax.random.split(key, histories.shape[0])),
                 "onestep": jax.jit(jax.vmap(lambda h, a: onestep_states(model, h, a[None])[0]))(histories, actions)}
    out = {"segments": int(histories.shape[0])}
    for name, states in predicted.items():
        error = jnp.square(model.norm(states) - future)                         # [B, F, S]
        out[name] = float(error.mean())
        out[f"{name}_last_step"] = float(error[:, -1].mean())
    return out


def value_fit(model, batch: dict, key, cfg, schedule) -> dict:
    """How well the learned objective J predicts the segments' value targets, with the data's own future states
    and with the diffusion dynamics' prediction of them (what the planner scores): `mse_over_variance`
    (1 - R^2) and the Spearman rank correlation, each over `batch`'s segments."""
    histories, actions = jnp.asarray(batch["history"]), jnp.asarray(batch["actions"])
    target = np.asarray(batch["value_target"], np.float64)
    sample = jax.jit(jax.vmap(lambda h, a, k: diffusion_states(model, h, a[None], k, cfg, schedule)[0]))
    futures = {"data_future": jnp.asarray(batch["future"]),
               "predicted_future": sample(histories, actions, jax.random.split(key, histories.shape[0]))}
    out = {"segments": int(histories.shape[0])}
    for name, future in futures.items():
        predicted = np.asarray(model.values(histories[:, -1], future, actions), np.float64)
        out[name] = {"mse_over_variance": float(np.mean((predicted - target) ** 2) / max(np.var(target), 1e-12)),
                     "spearman": _spearman(predicted, target)}
    return out


def _spearman(a, b) -> float:
    """Spearman rank correlation (nan when either side is constant)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(a, b).statistic)


def simulate_chunks(env, obs, actions):
    """The true futures of N action chunks [N, F, A] from the state `obs` describes: states [N, F, S], rewards
    [N, F] and the alive mask [N, F] (1 until the env's episode would have ended, inclusive of that step)."""
    start = env.state_from_obs(obs)

    def chunk(acts):
        def step(carry, action):
            state, alive = carry
            nxt = env.step(state, action)
            return (nxt, alive * (1.0 - nxt.done)), (nxt.obs, nxt.reward, alive)
        return jax.lax.scan(step, (start, jnp.ones(())), acts)[1]
    return jax.vmap(chunk)(actions)


def candidate_ranking(env, model, batch: dict, key, cfg, schedule, num_states: int = 32) -> dict:
    """How well each dynamics model ranks the planner's candidates from ONE state, which is what the argmax
    uses (value_fit ranks segments across states). At each of `num_states` held-out states: N diffusion
    proposals (the planner's), their futures predicted by the diffusion dynamics and by the one-step MLP,
    and simulated from the state; J scores each set. Per model, means over states of: `spearman` of J on
    predicted vs J on simulated futures over the N candidates; `argmax_gain_sd`, how far the candidate the
    argmax picks on predicted futures sits above the candidates' mean J on simulated futures, in that state's
    s.d. of it (`oracle` picks on the simulated futures themselves: the ceiling); `argmax_reward`, the F-step
    simulated reward of that pick against `mean_reward` of all candidates; `argmax_action_sq`, the pick's mean
    squared action against `mean_action_sq` (J's control cost is exact in the actions, so a dynamics model
    blind to them makes the argmax prefer small actions)."""
    histories = jnp.asarray(batch["history"][:num_states])
    n = cfg.num_samples

    def one_state(history, key):
        k_act, k_dyn = jax.random.split(key)
        actions = diffusion_actions(model, history, k_act, n, cfg, schedule)
        obs = history[-1]
        true_states, rewards, alive = simulate_chunks(env, obs, actions)
        score = lambda states: learned_objective(model, obs, states, actions)
        scores = {"diffusion": score(diffusion_states(model, history, actions, k_dyn, cfg, schedule)),
                  "onestep": score(onestep_states(model, history, actions)), "oracle": score(true_states)}
        return scores, jnp.sum(rewards * alive, -1), jnp.mean(actions ** 2, (-2, -1))

    # every state in one program; the per-state statistics on the host
    scores, reward, action_sq = jax.device_get(jax.jit(jax.vmap(one_state))(histories,
                                                                            jax.random.split(key, len(histories))))
    truth = np.asarray(scores["oracle"], np.float64)                              # [states, N]
    spread = np.maximum(truth.std(1), 1e-9)
    rows = np.arange(len(truth))
    out = {}
    for name, values in scores.items():
        pick = np.argmax(values, 1)
        out[name] = {"spearman": float(np.nanmean([_spearman(v, t) for v, t in zip(values, truth)])),
                     "argmax_gain_sd": float(np.mean((truth[rows, pick] - truth.mean(1)) / spread)),
                     "argmax_reward": float(np.mean(reward[rows, pick])),
                     "argmax_action_sq": float(np.mean(action_sq[rows, pick]))}
    return {**out, "mean_reward": float(np.mean(reward)), "mean_action_sq": float(np.mean(action_sq)),
            "states": int(len(truth)), "candidates": n}


def visited_states(result: dict, num_states: int) -> dict:
    """A candidate_ranking batch from the histories a policy acted on (evaluate's `visited_histories` of its
    first episodes): `num_states` of the alive (step, episode) pairs, evenly spaced over them."""
    histories, alive = np.asarray(result["visited_histories"]), np.asarray(result["visited_alive"], bool)
    steps, episodes = np.nonzero(alive)
    if len(steps) == 0:
        raise ValueError("The policy's recorded episodes have no alive step to rank candidates at.")
    pick = np.linspace(0, len(steps) - 1, min(num_states, len(steps))).round().astype(int)
    return {"history": histories[steps[pick], episodes[pick]]}
