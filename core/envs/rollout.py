"""Rollouts as one ``lax.scan``: ``rollout`` runs one environment; ``jax.vmap`` it over keys for many.

Paper-specific data built on it (LeWM's training clips, episode bank, violation-of-expectation rollouts) lives
in that paper's package (papers/lewm/data.py).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
PolicyFn = Callable[[Any, Array], Array]  # (state, key) -> action[A]


class Trajectory(NamedTuple):
    states: Any            # State with leading axis T + 1 (states[0] is the start)
    actions: Array         # f32[T, A]; actions[t] takes states[t] to states[t + 1]
    frames: Array | None   # uint8[T + 1, H, W, 3] or None


def expert_policy(env) -> PolicyFn:
    """The env's scripted behaviour policy towards the task goal stored in the state."""
    return lambda state, key: env.expert_action(state, None, key)


def random_policy(env) -> PolicyFn:
    return lambda state, key: jax.random.uniform(key, (env.action_dim,), minval=-1.0, maxval=1.0)


def step_fn(env, policy_fn: PolicyFn, new_goal_on_success: bool):
    """The scan body of ``rollout``: (state, key) -> (next_state, (next_state, action))."""
    def step(state, key):
        k_act, k_goal = jax.random.split(key)
        action = policy_fn(state, k_act)
        next_state = env.step(state, action)
        if new_goal_on_success:
            done = env.is_success(next_state, env.goal_state(next_state))
            resampled = env.resample_goal(next_state, k_goal)
            next_state = jax.tree.map(lambda a, b: jnp.where(done, a, b), resampled, next_state)
        return next_state, (next_state, action)
    return step


def rollout(env, policy_fn: PolicyFn, key: Array, num_steps: int, initial_state: Any = None,
            render: bool = False, new_goal_on_success: bool = False) -> Trajectory:
    """Runs `num_steps` steps from `initial_state` (or ``env.reset``) in one scan; optionally renders.

    With ``new_goal_on_success`` the task goal is resampled whenever it is reached, so long rollouts keep
    moving (used for training clips); otherwise the expert lingers near a reached goal.
    """
    k_reset, k_steps = jax.random.split(key)
    state0 = env.reset(k_reset) if initial_state is None else initial_state
    step_keys = jax.vmap(lambda t: jax.random.fold_in(k_steps, t))(jnp.arange(num_steps))
    _, (states, actions) = jax.lax.scan(step_fn(env, policy_fn, new_goal_on_success), state0, step_keys)
    states = jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), state0, states)
    frames = jax.vmap(env.render)(states) if render else None
    return Trajectory(states, actions, frames)
