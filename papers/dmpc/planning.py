"""Planners over the learned models (one episode each; vmap over episodes) and their evaluation on MJX.

    dmpc_act        Sample-Score-Rank: diffusion proposal -> diffusion dynamics -> objective -> argmax
    dmpc_crn_act    D-MPC with common random numbers: every candidate's future from one shared DDIM start
    dmpc_zero_act   D-MPC with each candidate's future from the zero DDIM start: the dynamics' central,
                    deterministic prediction instead of a random draw that the argmax can select on
    dmpc_softmax_act D-MPC with the first actions softmax-weighted by score (MBOP's aggregation), not argmax
    dmpc_lcb_act    dmpc_softmax scored by the learned J's ensemble lower bound, mean - plan.value_pessimism * std
    onestep_act     ablation: diffusion proposal, one-step MLP dynamics rolled out autoregressively
    gaussian_act    ablation: Gaussian chunk proposal, diffusion dynamics
    mbop_act        MBOP-style: BC policy + noise rolled through one-step dynamics, softmax-weighted first action
    bc_act          behaviour cloning

Every `*_act(model, history[H, S], key, cfg, objective) -> action[A]` replans from scratch each control step.
An objective is `objective(model, obs[S], states[N, F, S], actions[N, F, A]) -> scores[N]`: the learned value
(`learned_objective`) or a hand-written reward summed over the predicted states (`reward_objective`).
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core import diffusion
from core.planning.ssr import sample_score_rank, softmax_weighted


def learned_objective(model, obs, states, actions):
    return model.values(jnp.broadcast_to(obs, (states.shape[0],) + obs.shape), states, actions)


def reward_objective(reward_fn: Callable, discount: float = 0.99, healthy_fn: Callable | None = None,
                     terminal_penalty: float = 0.0):
    """Score = sum_k discount^k reward_fn(s_{t+k+1}, a_{t+k}) over the predicted sequence (no retraining).

    With `healthy_fn(states) -> [N, F]` (1 while the env would go on), a predicted fall ends the sum as it would
    end the episode: no reward after the first unhealthy state, and `terminal_penalty` discounted to that step,
    the same treatment as J's value targets (segments.discounted_returns). Without it a short horizon cannot
    see that a fall forfeits every later reward, and the hand-written objectives chose candidates that fell.
    """
    def objective(model, obs, states, actions):
        rewards = reward_fn(states, actions)                              # [N, F]
        weights = discount ** jnp.arange(rewards.shape[1])
        if healthy_fn is None:
            return jnp.sum(rewards * weights, -1)
        healthy = healthy_fn(states).astype(rewards.dtype)                # [N, F]: after action k
        alive = jnp.cumprod(jnp.pad(healthy[:, :-1], ((0, 0), (1, 0)), constant_values=1.0), -1)
        falls = alive * (1.0 - healthy)                                   # 1 at the first unhealthy step
        return jnp.sum((rewards + terminal_penalty * falls) * alive * weights, -1)
    return objective


def _broadcast_cond(model, history, n):
    cond = model.history_cond(history[None])
    return jnp.broadcast_to(cond, (n, cond.shape[-1]))


def diffusion_actions(model, history, key, n, cfg, schedule):
    F, A = model.dims.horizon, model.dims.action_dim
    # actions live in [-1, 1]: the sampler's x0 is clipped there (see core.diffusion.ddim_sample, clip_x0)
    flat = diffusion.ddim_sample(model.proposal, schedule, (n, F * A), _broadcast_cond(model, history, n), key,
                                 num_steps=cfg.proposal_steps, clip_x0=1.0 if cfg.clip_x0 else None,
                                 prediction=model.dims.prediction)
    return jnp.clip(flat, -1.0, 1.0).reshape(n, F, A)


def gaussian_actions(model, history, key, n):
    F, A = model.dims.horizon, model.dims.action_dim
    mean, log_std = model.gaussian_params(history[None])
    flat = mean + jnp.exp(log_std) * jax.random.normal(key, (n, F * A))
    return jnp.clip(flat, -1.0, 1.0).reshape(n, F, A)


def shared_dynamics_noise(key, n, size):
    """One DDIM start [1, size] for all n candidates (common random numbers), drawn from the sampler's key."""
    return jnp.broadcast_to(jax.random.normal(key, (1, size)), (n, size))


def diffusion_states(model, history, actions, key, cfg, schedule, shared_noise: bool = False, x_init=None,
                     zero_noise: bool = False):
    """The dynamics' predicted states [N, F, S] for N action chunks. `shared_noise`: every chunk's sample starts
    from the same DDIM noise (deterministic after it), so two chunks' futures differ by their actions alone; with
    independent draws the argmax over N scores also selects the luckiest draw of the dynamics' noise.
    `zero_noise`: every chunk starts from x_T = 0, the deterministic DDIM path through the middle of the noise
    (on CPU-trained walker2d heads its 8-step error was 0.153 against 0.275 for one draw and 0.159 for the mean
    of 16 draws: papers/dmpc/README.md). `x_init` [N, F*S] overrides the start (default: drawn from `key` as
    core.diffusion.ddim_sample draws it)."""
    n, F, _ = actions.shape
    S = model.dims.obs_dim
    cond = jnp.concatenate([_broadcast_cond(model, history, n), actions.reshape(n, -1)], -1)
    if x_init is None and zero_noise:
        x_init = jnp.zeros((n, F * S))
    if x_init is None and shared_noise:
        x_init = shared_dynamics_noise(key, n, F * S)
    delta = diffusion.ddim_sample(model.dynamics, schedule, (n, F * S), cond, key, num_steps=cfg.dynamics_steps,
                                  clip_x0=model.delta_bound[...] if cfg.clip_x0 else None,
                                  prediction=model.dims.prediction, x_init=x_init)
    normalized = model.norm(history[-1])[None, None] + delta.reshape(n, F, S) * model.delta_std[...]
    return model.denorm(normalized)


def onestep_states(model, history, actions):
    obs = jnp.broadcast_to(history[-1], (actions.shape[0], history.shape[-1]))

    def step(obs, action):
        nxt = model.onestep_next(obs, action)
        return nxt, nxt
    _, states = jax.lax.scan(step, obs, jnp.swapaxes(actions, 0, 1))
    return jnp.swapaxes(states, 0, 1)


def _ssr(model, history, key, cfg, objective, propose, predict, softmax: bool = False):
    def sample(key, n):
        k_act, k_dyn = jax.random.split(key)
        actions = propose(k_act, n)
        return actions, predict(actions, k_dyn)
    score = lambda c: objective(model, history[-1], c[1], c[0])
    if softmax:
        actions, states = sample(key, cfg.num_samples)
        return softmax_weighted(actions[:, 0], score((actions, states)), cfg.softmax_temperature * model.value_std[...])
    (actions, _), _ = sample_score_rank(sample, score, key, cfg.num_samples)
    return actions[0]


def dmpc_act(model, history, key, cfg, objective, schedule, shared_noise=False, softmax=False, zero_noise=False):
    return _ssr(model, history, key, cfg, objective,
                lambda k, n: diffusion_actions(model, history, k, n, cfg, schedule),
                lambda a, k: diffusion_states(model, history, a, k, cfg, schedule, shared_noise,
                                              zero_noise=zero_noise), softmax)


def dmpc_crn_act(model, history, key, cfg, objective, schedule):
    return dmpc_act(model, history, key, cfg, objective, schedule, shared_noise=True)


def dmpc_zero_act(model, history, key, cfg, objective, schedule):
    return dmpc_act(model, history, key, cfg, objective, schedule, zero_noise=True)


def dmpc_softmax_act(model, history, key, cfg, objective, schedule):
    return dmpc_act(model, history, key, cfg, objective, schedule, softmax=True)


def dmpc_lcb_act(model, history, key, cfg, objective, schedule):
    """Learned-objective only (`objective` is ignored): candidates the J members disagree on rank lower."""
    def lower_bound(model, obs, states, actions):
        obs = jnp.broadcast_to(obs, (states.shape[0],) + obs.shape)
        return model.values(obs, states, actions, pessimism=cfg.value_pessimism)
    return dmpc_act(model, history, key, cfg, lower_bound, schedule, softmax=True)


# the learned-objective D-MPC variants as switches of one function: (shared dynamics noise, softmax first action,
# ranked by J's lower bound, zero dynamics noise)
DMPC_VARIANTS = {"dmpc": (False, False, False, False), "dmpc_crn": (True, False, False, False),
                 "dmpc_softmax": (False, True, False, False), "dmpc_lcb": (False, True, True, False),
                 "dmpc_zero": (False, False, False, True)}


def dmpc_variant_act(model, history, key, cfg, schedule, shared_noise, softmax, pessimism, zero_noise=False):
    """dmpc / dmpc_crn / dmpc_softmax / dmpc_lcb / dmpc_zero (learned J) with the variant's switches as traced
    values, so episodes of all of them run as one vmapped batch: fewer kernels per control step. For the same
    key it draws what each variant's own function draws (tests/dmpc_planner_test.py checks the actions agree)."""
    n, F, S = cfg.num_samples, model.dims.horizon, model.dims.obs_dim
    k_act, k_dyn = jax.random.split(key)
    actions = diffusion_actions(model, history, k_act, n, cfg, schedule)
    independent = jax.random.normal(jax.random.split(k_dyn)[0], (n, F * S))      # ddim_sample's own draw
    x_init = jnp.where(shared_noise, shared_dynamics_noise(k_dyn, n, F * S), independent)
    x_init = jnp.where(zero_noise, 0.0, x_init)
    states = diffusion_states(model, history, actions, k_dyn, cfg, schedule, x_init=x_init)
    scores = model.values(jnp.broadcast_to(history[-1], (n,) + history[-1].shape), states, actions, pessimism)
    best = actions[jnp.argmax(scores), 0]
    weighted = softmax_weighted(actions[:, 0], scores, cfg.softmax_temperature * model.value_std[...])
    return jnp.where(softmax, weighted, best)


def make_variants_policy(graphdef, variants: tuple[str, ...], cfg, schedule):
    """`policy(model_state, histories[V*E, H, S], keys[V]) -> actions[V*E, A]` for V learned-objective D-MPC
    variants sharing one model: variant j owns rows j*E:(j+1)*E and episode keys split from keys[j], as
    make_policy's policy would split them. `policy.members` names the variants (the evaluator's grouping)."""
    unknown = [v for v in variants if v not in DMPC_VARIANTS]
    if unknown:
        raise ValueError(f"Not learned-objective D-MPC variants: {unknown}; choose from {sorted(DMPC_VARIANTS)}.")
    switches = np.asarray([DMPC_VARIANTS[v] for v in variants], np.float32)        # [V, 4]

    def policy(model_state, histories, keys):
        model = nnx.merge(graphdef, model_state)
        per_variant = histories.shape[0] // len(variants)
        episode_keys = jnp.concatenate([jax.random.split(k, per_variant) for k in keys])
        shared, softmax, pessimistic, zero = (jnp.repeat(jnp.asarray(switches[:, i]), per_variant)
                                              for i in range(switches.shape[1]))
        return jax.vmap(lambda h, k, c, s, p, z: dmpc_variant_act(model, h, k, cfg, schedule, c > 0, s > 0,
                                                                  p * cfg.value_pessimism, z > 0))(
            histories, episode_keys, shared, softmax, pessimistic, zero)
    policy.members = tuple(variants)
    return policy


def seeds_policy(policy, seeds: int):
    """`policy` (make_policy's, or make_variants_policy's grouped one) vmapped over `seeds` models: the state has a
    leading seed axis, and within each of the policy's blocks of episodes (one per grouped member) seed s owns the
    s-th run of E = rows / (members * seeds) episodes, with its keys folded with s. So evaluate() at seeds * E
    episodes scores every seed's model on E episodes of its own, in one program."""
    members = getattr(policy, "members", None)
    k = len(members) if members else 1
    fold = jax.vmap(lambda key, s: jax.random.fold_in(key, s), in_axes=(None, 0))

    def wrapped(stacked_state, histories, keys):
        E = histories.shape[0] // (k * seeds)
        per_seed = histories.reshape((k, seeds, E) + histories.shape[1:]).swapaxes(0, 1)
        per_seed = per_seed.reshape((seeds, k * E) + histories.shape[1:])
        seed_keys = (jax.vmap(lambda kk: fold(kk, jnp.arange(seeds)), out_axes=1)(keys) if members
                     else fold(keys, jnp.arange(seeds)))
        actions = jax.vmap(policy)(stacked_state, per_seed, seed_keys)                    # [seeds, k * E, A]
        return actions.reshape((seeds, k, E, -1)).swapaxes(0, 1).reshape((k * seeds * E, -1))
    if members:
        wrapped.members = members
    return wrapped


def onestep_act(model, history, key, cfg, objective, schedule):
    return _ssr(model, history, key, cfg, objective,
                lambda k, n: diffusion_actions(model, history, k, n, cfg, schedule),
                lambda a, k: onestep_states(model, history, a))


def gaussian_act(model, history, key, cfg, objective, schedule):
    return _ssr(model, history, key, cfg, objective,
                lambda k, n: gaussian_actions(model, history, k, n),
                lambda a, k: diffusion_states(model, history, a, k, cfg, schedule))


def mbop_act(model, history, key, cfg, objective, schedule):
    """MBOP-Trajopt without trajectory blending: N rollouts of (BC + noise, one-step dynamics), scored by the
    objective, first actions averaged with weights exp(score / (temperature * value_std))."""
    n, F = cfg.num_samples, model.dims.horizon
    hist = jnp.broadcast_to(history, (n,) + history.shape)

    def step(hist, key):
        action = jnp.clip(model.bc_action(hist) + cfg.mbop_noise * jax.random.normal(key, (n, model.dims.action_dim)),
                          -1.0, 1.0)
        nxt = model.onestep_next(hist[:, -1], action)
        return jnp.concatenate([hist[:, 1:], nxt[:, None]], 1), (action, nxt)
    _, (actions, states) = jax.lax.scan(step, hist, jax.random.split(key, F))
    actions, states = jnp.swapaxes(actions, 0, 1), jnp.swapaxes(states, 0, 1)
    scores = objective(model, history[-1], states, actions)
    return softmax_weighted(actions[:, 0], scores, cfg.softmax_temperature * model.value_std[...])


def bc_act(model, history, key, cfg, objective, schedule):
    return model.bc_action(history[None])[0]


METHODS = {"dmpc": dmpc_act, "dmpc_crn": dmpc_crn_act, "dmpc_softmax": dmpc_softmax_act, "dmpc_lcb": dmpc_lcb_act,
           "dmpc_zero": dmpc_zero_act,
           "onestep": onestep_act, "gaussian": gaussian_act, "mbop": mbop_act, "bc": bc_act}


def make_policy(graphdef, method: str, cfg, schedule, objective=learned_objective, dtype=jnp.float32):
    """`policy(model_state, histories[E, H, S], key) -> actions[E, A]`, vmapped over episodes."""
    if method not in METHODS:
        raise ValueError(f"Unknown planner {method!r}; choose one of {sorted(METHODS)}.")
    act = METHODS[method]

    def policy(model_state, histories, key):
        model = nnx.merge(graphdef, model_state)
        keys = jax.random.split(key, histories.shape[0])
        return jax.vmap(lambda h, k: act(model, h, k, cfg, objective, schedule))(histories, keys)
    return policy


# evaluate()'s outputs that describe a policy's first episodes rather than one value per episode
FIRST_EPISODES_KEYS = ("first_episode_qpos", "visited_histories", "visited_alive")


def evaluate(env, policies: dict[str, Callable], model_states: dict, key: jax.Array, num_episodes: int,
             max_steps: int, reward_fns: dict[str, Callable] | None = None, history: int = 1,
             record_episodes: int = 4) -> dict:
    """Runs every policy on `num_episodes` episodes (same reset keys for all), stepping all of them in one
    vmapped MJX step per control step inside one `lax.scan`. Returns, per policy, numpy arrays `return`
    (the env's reward), `length`, `action_sq` (the executed actions' mean square, summed over the episode),
    `return_<name>` for each extra reward_fn(next_obs, action) (summed while alive), `first_episode_qpos`
    (the first episode's qpos, for a GIF), and the histories the policy acted on in its first
    `record_episodes` episodes, `visited_histories` [T, R, history, obs] with `visited_alive` [T, R] (the
    states a closed loop reaches, for diagnostics such as candidate_ranking)."""
    names = _episode_order(policies)
    reward_fns = reward_fns or {}
    record = min(record_episodes, num_episodes)
    cache_key = (env, tuple((n, policies[n]) for n in names), num_episodes, max_steps,
                 tuple(sorted(reward_fns.items())), history, record)
    if cache_key not in _EVALUATORS:
        _EVALUATORS[cache_key] = _make_evaluator(env, policies, names, num_episodes, max_steps, reward_fns, history,
                                                 record)
    totals, qpos, alive, visited, visited_alive = jax.device_get(
        _EVALUATORS[cache_key]({n: model_states[n] for n in names}, key))
    E = num_episodes
    out = {n: {k: np.asarray(v[i * E:(i + 1) * E]) for k, v in totals.items()} for i, n in enumerate(names)}
    for i, n in enumerate(names):      # qpos [T+1, nq] of the policy's first episode, up to its end
        out[n]["first_episode_qpos"] = qpos[:int(alive[:, i].sum()) + 1, i]
        out[n]["visited_histories"] = np.asarray(visited[:, i])
        out[n]["visited_alive"] = np.asarray(visited_alive[:, i])
    return out


_EVALUATORS: dict = {}


def _episode_order(policies: dict) -> list[str]:
    """Policy names in the order their episodes are laid out: sorted, except that the members of a grouped
    policy (one with `.members`, registered under each member's name) sit together in its own order."""
    names, placed = [], set()
    for n in sorted(policies):
        if n in placed:
            continue
        members = getattr(policies[n], "members", (n,))
        if n not in members or any(policies.get(m) is not policies[n] for m in members):
            raise ValueError(f"Grouped policy under {n!r} must be registered under each of its members {members}.")
        names += list(members)
        placed.update(members)
    return names


def _make_evaluator(env, policies, names, num_episodes, max_steps, reward_fns, history, record):
    M, E = len(names), num_episodes

    def run(model_states, key):
        reset_key, act_key = jax.random.split(key)
        reset_keys = jnp.tile(jax.random.split(reset_key, E), (M,))
        state = jax.vmap(env.reset)(reset_keys)
        hist = jnp.repeat(state.obs[:, None], history, 1)

        def step(carry, key):
            state, hist, alive, totals = carry
            keys = jax.random.split(key, M)
            chunks, i = [], 0
            while i < M:                         # a grouped policy takes all its members' episodes at once
                n = names[i]
                grouped = hasattr(policies[n], "members")
                k = len(policies[n].members) if grouped else 1
                chunks.append(policies[n](model_states[n], hist[i * E:(i + k) * E], keys[i:i + k] if grouped else keys[i]))
                i += k
            actions = jnp.concatenate(chunks)
            actions = jnp.clip(actions, -1.0, 1.0)
            nxt = jax.vmap(env.step)(state, actions)
            rewards = {"return": nxt.reward, "action_sq": jnp.mean(actions ** 2, -1),
                       **{f"return_{k}": fn(nxt.obs, actions) for k, fn in reward_fns.items()}}
            totals = {**{k: totals[k] + jnp.where(alive, rewards[k], 0.0) for k in rewards},
                      "length": totals["length"] + alive}
            # the histories just acted on, of each policy's first `record` episodes
            visited = hist.reshape(M, E, *hist.shape[1:])[:, :record]
            visited_alive = alive.reshape(M, E)[:, :record]
            hist = jnp.concatenate([hist[:, 1:], nxt.obs[:, None]], 1)
            first_qpos = nxt.pipeline_state.q[::E]                   # episode 0 of every policy, for GIFs
            return (nxt, hist, alive & (nxt.done < 0.5), totals), (first_qpos, alive[::E], visited, visited_alive)

        totals = {"return": jnp.zeros(M * E), "action_sq": jnp.zeros(M * E), "length": jnp.zeros(M * E, jnp.int32),
                  **{f"return_{k}": jnp.zeros(M * E) for k in reward_fns}}
        (_, _, _, totals), (qpos, alive, visited, visited_alive) = jax.lax.scan(
            step, (state, hist, jnp.ones(M * E, bool), totals), jax.random.split(act_key, max_steps))
        return totals, jnp.concatenate([state.pipeline_state.q[::E][None], qpos]), alive, visited, visited_alive

    return jax.jit(run)


def plan_ms_per_step(policy: Callable, model_state, histories: jax.Array, repeats: int = 5) -> float:
    """Milliseconds per control step of a jitted policy over a batch of episodes (compile excluded)."""
    fn = jax.jit(policy)
    jax.block_until_ready(fn(model_state, histories, jax.random.key(0)))
    start = time.perf_counter()
    for i in range(repeats):
        out = fn(model_state, histories, jax.random.key(i + 1))
    jax.block_until_ready(out)
    return 1000.0 * (time.perf_counter() - start) / repeats

