"""LeWM's training data, generated on device: clips of expert rollouts (fresh, from a simulated episode bank, or
as a stream), the batch function the trainer calls, and the violation-of-expectation rollouts of §5.2.

Clips are laid out as LeWM's loader lays out its data: ``num_frames`` frames ``frameskip`` steps apart, each
followed by the block of ``frameskip`` actions executed after it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from core import envs
from core.envs import rollout as rollout_lib

Array = jax.Array


def make_env(config: ml_collections.ConfigDict):
    """The config's environment: env.name built with the static parameters env.params (e.g. Push-T's
    expert_max_action, which sets the demonstrations' speed)."""
    params = config.env.get("params")
    return envs.make_env(config.env.name, **(dict(params) if params else {}))


DATA_POLICIES = ("expert", "random")


def data_policy(config: ml_collections.ConfigDict, env) -> rollout_lib.PolicyFn:
    """The behaviour policy of the config's data (data.policy), for the training clips, the evaluation demos and
    the surprise rollouts alike: "expert" (default) the env's scripted expert towards its task goal; "random"
    uniform actions in [-1, 1] every step, as the official Reacher data (swm's collect_reacher.py, whose
    random-policy dataset the Reacher evaluation draws its episodes from)."""
    name = config.data.get("policy", "expert")
    if name == "expert":
        return rollout_lib.expert_policy(env)
    if name == "random":
        return rollout_lib.random_policy(env)
    raise ValueError(f"data.policy must be one of {DATA_POLICIES}, got {name!r}.")


class Clips(NamedTuple):
    frames: Array          # uint8[B, num_frames, H, W, 3]
    actions: Array         # f32[B, num_frames, frameskip * A]; block t follows frames[:, t]
    states: Any            # State with leading axes [B, num_frames]


def sample_clips(env, key: Array, batch_size: int, num_frames: int = 4, frameskip: int = 5,
                 max_offset: int = 80, policy_fn: rollout_lib.PolicyFn | None = None) -> Clips:
    """A batch of training clips from random starts and expert rollouts, rendered on device (jittable).

    Each clip starts at a uniformly random step in [0, max_offset] of a fresh expert rollout (goals resampled
    on success), so clips cover whole episodes rather than only their beginnings.
    """
    policy_fn = rollout_lib.expert_policy(env) if policy_fn is None else policy_fn
    span = num_frames * frameskip

    def one(clip_key):
        k_roll, k_offset = jax.random.split(clip_key)
        traj = rollout_lib.rollout(env, policy_fn, k_roll, max_offset + span, new_goal_on_success=True)
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
                  policy_fn: rollout_lib.PolicyFn | None = None) -> rollout_lib.Trajectory:
    """`num_episodes` expert rollouts of `num_steps` from random starts (goals resampled on success), states
    only: a fixed dataset held on device, which ``clips_from_bank`` cuts and renders (jittable)."""
    policy_fn = rollout_lib.expert_policy(env) if policy_fn is None else policy_fn
    return jax.vmap(lambda k: rollout_lib.rollout(env, policy_fn, k, num_steps, new_goal_on_success=True))(
        jax.random.split(key, num_episodes))


def clips_from_bank(env, bank: rollout_lib.Trajectory, key: Array, batch_size: int, num_frames: int = 4,
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
    step = rollout_lib.step_fn(env, rollout_lib.expert_policy(env), True)

    def warm(states, t):
        keys = jax.random.split(jax.random.fold_in(k_warm, t), num_envs)
        stepped, _ = jax.vmap(step)(states, keys)
        keep = t < lengths
        return jax.tree.map(lambda new, old: jnp.where(
            keep.reshape(keep.shape + (1,) * (new.ndim - 1)), new, old), stepped, states), None

    states, _ = jax.lax.scan(warm, states, jnp.arange(max_warmup))
    return states


def next_clips(env, states: Any, key: Array, num_frames: int = 4, frameskip: int = 5, reset_prob: float = 0.0,
               policy_fn: rollout_lib.PolicyFn | None = None) -> tuple[Any, Clips]:
    """Advances every env of the stream by num_frames * frameskip expert steps and returns that stretch as one
    clip per env (jittable; carry the returned states to the next call).

    Each clip costs only its own 20 steps, against ``sample_clips``' max_offset + 20, so this is the cheap
    source for long training runs; consecutive clips of one env are consecutive stretches of one trajectory
    (goals resampled on success; with ``reset_prob`` an env restarts from a fresh random state instead).
    """
    policy_fn = rollout_lib.expert_policy(env) if policy_fn is None else policy_fn
    num_envs = jax.tree.leaves(states)[0].shape[0]
    span = num_frames * frameskip
    k_roll, k_reset, k_coin = jax.random.split(key, 3)
    fresh = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
    restart = jax.random.uniform(k_coin, (num_envs,)) < reset_prob
    states = jax.tree.map(lambda new, old: jnp.where(restart.reshape(restart.shape + (1,) * (new.ndim - 1)),
                                                     new, old), fresh, states)
    traj = jax.vmap(lambda k, s: rollout_lib.rollout(env, policy_fn, k, span, initial_state=s, new_goal_on_success=True))(
        jax.random.split(k_roll, num_envs), states)
    clip_states = jax.tree.map(lambda x: x[:, :span:frameskip], traj.states)
    actions = traj.actions.reshape(num_envs, num_frames, frameskip * traj.actions.shape[-1])
    frames = jax.vmap(jax.vmap(env.render))(clip_states)
    return jax.tree.map(lambda x: x[:, -1], traj.states), Clips(frames, actions, clip_states)


def action_statistics(batch_fn, num_batches: int, action_dim: int) -> tuple[Array, Array]:
    """Per-column mean and std of the actions in the training batches 0..num_batches-1 (what the trainer
    sees first; batches are pure functions of the step): the official code's StandardScaler, fitted on a sample
    of the training data. A constant column gets std 1 (as sklearn's scaler), so the z-score stays finite."""
    actions = jnp.concatenate([batch_fn(step)["actions"].reshape(-1, action_dim) for step in range(num_batches)])
    mean, std = jnp.mean(actions, 0), jnp.std(actions, 0)
    return mean, jnp.where(std < 1e-6, 1.0, std)


VOE_VARIANTS = ("none", "colour", "teleport")


def voe_rollouts(env, policy_fn: rollout_lib.PolicyFn, key: Array, num_steps: int, perturb_step: int,
                 render: bool = True) -> rollout_lib.Trajectory:
    """The violation-of-expectation triple (LeWM §5.2): one rollout continued three ways from `perturb_step`
    - unperturbed, ``env.perturb_colour`` and ``env.teleport`` applied to the state at that step - with the
    same policy noise afterwards, so the three differ only by the perturbation. Leading axis: VOE_VARIANTS;
    states [3, num_steps + 1], actions [3, num_steps], frames [3, num_steps + 1, H, W, 3] (if render).
    """
    if not 0 < perturb_step < num_steps:
        raise ValueError(f"perturb_step must lie in (0, {num_steps}); got {perturb_step}.")
    k_before, k_after, k_perturb = jax.random.split(key, 3)
    before = rollout_lib.rollout(env, policy_fn, k_before, perturb_step)
    last = jax.tree.map(lambda x: x[-1], before.states)
    starts = [last, env.perturb_colour(last, k_perturb), env.teleport(last, k_perturb)]
    starts = jax.tree.map(lambda *xs: jnp.stack(xs), *starts)
    # The same continuation key for every variant: identical policy noise after the perturbation.
    after = jax.vmap(lambda s: rollout_lib.rollout(env, policy_fn, k_after, num_steps - perturb_step, initial_state=s))(starts)
    states = jax.tree.map(lambda b, a: jnp.concatenate([jnp.broadcast_to(b[:-1], (3,) + b[:-1].shape), a], axis=1),
                          before.states, after.states)
    actions = jnp.concatenate([jnp.broadcast_to(before.actions, (3,) + before.actions.shape), after.actions], axis=1)
    frames = jax.vmap(jax.vmap(env.render))(states) if render else None
    return rollout_lib.Trajectory(states, actions, frames)


def make_batch_fn(config: ml_collections.ConfigDict, env=None):
    """step -> {'frames': uint8[B, 4, H, W, 3], 'actions': f32[B, 4, frameskip*A]} rendered on device.

    `config.data.bank_episodes` = 0: every clip is a fresh rollout of `data_policy` (`sample_clips`); > 0: that
    many episodes of max_offset + clip-span steps are simulated once and clips are cut from them
    (`clips_from_bank`; same clip distribution, a finite dataset as in the paper, and no simulation
    in the step). Either way a batch is a pure function of (data seed, step), so resuming needs no data state.
    """
    env = make_env(config) if env is None else env
    policy_fn = data_policy(config, env)
    key = jax.random.key(config.train.data_seed)
    frames, frameskip = config.model.history + 1, config.model.frameskip
    batch, max_offset = config.data.batch_size, config.data.max_offset
    episodes = config.data.bank_episodes

    if episodes:
        bank_key, key = jax.random.split(key)
        bank = jax.jit(simulate_bank, static_argnums=(0, 2, 3, 4))(
            env, bank_key, episodes, max_offset + frames * frameskip, policy_fn)

        @jax.jit
        def from_bank(bank, step):
            clips = clips_from_bank(env, bank, jax.random.fold_in(key, step), batch, frames, frameskip)
            return {"frames": clips.frames, "actions": clips.actions}

        return lambda step: from_bank(bank, jnp.int32(step))     # the bank is an argument, not a constant

    @jax.jit
    def batch_at(step):
        clips = sample_clips(env, jax.random.fold_in(key, step), batch, num_frames=frames,
                                     frameskip=frameskip, max_offset=max_offset, policy_fn=policy_fn)
        return {"frames": clips.frames, "actions": clips.actions}

    return lambda step: batch_at(jnp.int32(step))
