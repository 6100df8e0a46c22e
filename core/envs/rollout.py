"""Rollouts as one ``lax.scan`` and on-device generation of LeWM training clips.

``rollout`` runs one environment; ``jax.vmap`` it over keys for many. ``sample_clips`` is the jittable source of
training data used inside a train step: random starts, expert rollouts, frames rendered on device, laid out as
LeWM's loader lays out its data (``num_frames`` frames ``frameskip`` steps apart, each followed by the block of
``frameskip`` actions executed after it).
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


class Clips(NamedTuple):
    frames: Array          # uint8[B, num_frames, H, W, 3]
    actions: Array         # f32[B, num_frames, frameskip * A]; block t follows frames[:, t]
    states: Any            # State with leading axes [B, num_frames]


def expert_policy(env) -> PolicyFn:
    """The env's scripted behaviour policy towards the task goal stored in the state."""
    return lambda state, key: env.expert_action(state, None, key)


def random_policy(env) -> PolicyFn:
    return lambda state, key: jax.random.uniform(key, (env.action_dim,), minval=-1.0, maxval=1.0)


def _step_fn(env, policy_fn: PolicyFn, new_goal_on_success: bool):
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
    _, (states, actions) = jax.lax.scan(_step_fn(env, policy_fn, new_goal_on_success), state0, step_keys)
    states = jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), state0, states)
    frames = jax.vmap(env.render)(states) if render else None
    return Trajectory(states, actions, frames)


def sample_clips(env, key: Array, batch_size: int, num_frames: int = 4, frameskip: int = 5,
                 max_offset: int = 80, policy_fn: PolicyFn | None = None) -> Clips:
    """A batch of training clips from random starts and expert rollouts, rendered on device (jittable).

    Each clip starts at a uniformly random step in [0, max_offset] of a fresh expert rollout (goals resampled
    on success), so clips cover whole episodes rather than only their beginnings.
    """
    policy_fn = expert_policy(env) if policy_fn is None else policy_fn
    span = num_frames * frameskip

    def one(clip_key):
        k_roll, k_offset = jax.random.split(clip_key)
        traj = rollout(env, policy_fn, k_roll, max_offset + span, new_goal_on_success=True)
        offset = jax.random.randint(k_offset, (), 0, max_offset + 1)
        frame_index = offset + frameskip * jnp.arange(num_frames)
        states = jax.tree.map(lambda x: x[frame_index], traj.states)
        actions = jax.lax.dynamic_slice_in_dim(traj.actions, offset, span)
        actions = actions.reshape(num_frames, frameskip * actions.shape[-1])
        return states, actions

    states, actions = jax.vmap(one)(jax.random.split(key, batch_size))
    frames = jax.vmap(jax.vmap(env.render))(states)
    return Clips(frames, actions, states)


def simulate_bank(env, key: Array, num_episodes: int, num_steps: int,
                  policy_fn: PolicyFn | None = None) -> Trajectory:
    """`num_episodes` expert rollouts of `num_steps` from random starts (goals resampled on success), states
    only: a fixed dataset held on device, which ``clips_from_bank`` cuts and renders (jittable)."""
    policy_fn = expert_policy(env) if policy_fn is None else policy_fn
    return jax.vmap(lambda k: rollout(env, policy_fn, k, num_steps, new_goal_on_success=True))(
        jax.random.split(key, num_episodes))


def clips_from_bank(env, bank: Trajectory, key: Array, batch_size: int, num_frames: int = 4,
                    frameskip: int = 5) -> Clips:
    """Training clips cut from a ``simulate_bank`` dataset at a uniformly random episode and start, rendered.

    With episodes of max_offset + num_frames * frameskip steps the clips follow ``sample_clips``'
    distribution, but each costs a gather and a render instead of a fresh simulation (Push-T's contact
    solver makes that simulation the bulk of a train step).
    """
    num_episodes, num_steps = bank.actions.shape[:2]
    span = num_frames * frameskip
    if num_steps < span:
        raise ValueError(f"Bank episodes have {num_steps} steps; a clip needs {span}.")
    k_episode, k_offset = jax.random.split(key)
    episode = jax.random.randint(k_episode, (batch_size,), 0, num_episodes)
    offset = jax.random.randint(k_offset, (batch_size,), 0, num_steps - span + 1)
    frame_index = offset[:, None] + frameskip * jnp.arange(num_frames)
    states = jax.tree.map(lambda x: x[episode[:, None], frame_index], bank.states)
    action_index = offset[:, None] + jnp.arange(span)
    actions = bank.actions[episode[:, None], action_index].reshape(batch_size, num_frames, -1)
    frames = jax.vmap(jax.vmap(env.render))(states)
    return Clips(frames, actions, states)


def init_clip_stream(env, key: Array, num_envs: int, max_warmup: int = 40) -> Any:
    """States of `num_envs` envs from random starts, each advanced by a random 0..max_warmup expert steps
    (so their episodes are out of phase): the carry of ``next_clips``."""
    k_reset, k_warm, k_len = jax.random.split(key, 3)
    states = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
    lengths = jax.random.randint(k_len, (num_envs,), 0, max_warmup + 1)
    step = _step_fn(env, expert_policy(env), True)

    def warm(states, t):
        keys = jax.random.split(jax.random.fold_in(k_warm, t), num_envs)
        stepped, _ = jax.vmap(step)(states, keys)
        keep = t < lengths
        return jax.tree.map(lambda new, old: jnp.where(
            keep.reshape(keep.shape + (1,) * (new.ndim - 1)), new, old), stepped, states), None

    states, _ = jax.lax.scan(warm, states, jnp.arange(max_warmup))
    return states


def next_clips(env, states: Any, key: Array, num_frames: int = 4, frameskip: int = 5, reset_prob: float = 0.0,
               policy_fn: PolicyFn | None = None) -> tuple[Any, Clips]:
    """Advances every env of the stream by num_frames * frameskip expert steps and returns that stretch as one
    clip per env (jittable; carry the returned states to the next call).

    Each clip costs only its own 20 steps, against ``sample_clips``' max_offset + 20, so this is the cheap
    source for long training runs; consecutive clips of one env are consecutive stretches of one trajectory
    (goals resampled on success; with ``reset_prob`` an env restarts from a fresh random state instead).
    """
    policy_fn = expert_policy(env) if policy_fn is None else policy_fn
    num_envs = jax.tree.leaves(states)[0].shape[0]
    span = num_frames * frameskip
    k_roll, k_reset, k_coin = jax.random.split(key, 3)
    fresh = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
    restart = jax.random.uniform(k_coin, (num_envs,)) < reset_prob
    states = jax.tree.map(lambda new, old: jnp.where(restart.reshape(restart.shape + (1,) * (new.ndim - 1)),
                                                     new, old), fresh, states)
    traj = jax.vmap(lambda k, s: rollout(env, policy_fn, k, span, initial_state=s, new_goal_on_success=True))(
        jax.random.split(k_roll, num_envs), states)
    clip_states = jax.tree.map(lambda x: x[:, :span:frameskip], traj.states)
    actions = traj.actions.reshape(num_envs, num_frames, frameskip * traj.actions.shape[-1])
    frames = jax.vmap(jax.vmap(env.render))(clip_states)
    return jax.tree.map(lambda x: x[:, -1], traj.states), Clips(frames, actions, clip_states)


VOE_VARIANTS = ("none", "colour", "teleport")


def voe_rollouts(env, policy_fn: PolicyFn, key: Array, num_steps: int, perturb_step: int,
                 render: bool = True) -> Trajectory:
    """The violation-of-expectation triple (LeWM §5.2): one rollout continued three ways from `perturb_step`
    - unperturbed, ``env.perturb_colour`` and ``env.teleport`` applied to the state at that step - with the
    same policy noise afterwards, so the three differ only by the perturbation. Leading axis: VOE_VARIANTS;
    states [3, num_steps + 1], actions [3, num_steps], frames [3, num_steps + 1, H, W, 3] (if render).
    """
    if not 0 < perturb_step < num_steps:
        raise ValueError(f"perturb_step must lie in (0, {num_steps}); got {perturb_step}.")
    k_before, k_after, k_perturb = jax.random.split(key, 3)
    before = rollout(env, policy_fn, k_before, perturb_step)
    last = jax.tree.map(lambda x: x[-1], before.states)
    starts = [last, env.perturb_colour(last, k_perturb), env.teleport(last, k_perturb)]
    starts = jax.tree.map(lambda *xs: jnp.stack(xs), *starts)
    # The same continuation key for every variant: identical policy noise after the perturbation.
    after = jax.vmap(lambda s: rollout(env, policy_fn, k_after, num_steps - perturb_step, initial_state=s))(starts)
    states = jax.tree.map(lambda b, a: jnp.concatenate([jnp.broadcast_to(b[:-1], (3,) + b[:-1].shape), a], axis=1),
                          before.states, after.states)
    actions = jnp.concatenate([jnp.broadcast_to(before.actions, (3,) + before.actions.shape), after.actions], axis=1)
    frames = jax.vmap(jax.vmap(env.render))(states) if render else None
    return Trajectory(states, actions, frames)
