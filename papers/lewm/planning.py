"""LeWM planning: CEM over action blocks in the latent space, cost = terminal latent distance to the goal.

An episode (start from a random state of an expert rollout with its 3-frame history, goal 25 steps later,
budget 50 steps: two plans of 5 blocks × 5 steps, each executed whole before replanning) is one jitted
function of a key, vmapped over episodes. The model enters as (graphdef, state) so its weights are
arguments of the compiled program, not constants baked into it (one compile serves every checkpoint).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from core import precision
from core.envs import rollout as env_rollout
from core.planning import cem


def planning_model(graphdef, state, dtype):
    """The model the evaluation plans with, its weights cast to `dtype` (bfloat16 is the training compute
    dtype, and CEM's GEMMs over 300 samples × 3 tokens run at half their f32 time)."""
    return precision.cast_params(nnx.merge(graphdef, state), jnp.dtype(dtype))


def latent_cost(model, z_hist, past_blocks, z_goal):
    """plans[N, H, frameskip*A] -> ||z_H - z_goal||² (terminal latent distance, summed over dims)."""
    def cost(plans):
        n = plans.shape[0]
        future = model.rollout(jnp.broadcast_to(z_hist, (n,) + z_hist.shape),
                               jnp.broadcast_to(past_blocks, (n,) + past_blocks.shape), plans)
        return jnp.sum(jnp.square(future[:, -1].astype(jnp.float32) - z_goal.astype(jnp.float32)), -1)
    return cost


def plan(model, z_hist, past_blocks, z_goal, key, *, horizon: int, block_dim: int, num_samples: int,
         num_elites: int, num_iters: int):
    """The CEM plan [horizon, block_dim] in [-1, 1] (mean 0, σ0 = 1, as the paper)."""
    mean, _ = cem.cem(latent_cost(model, z_hist, past_blocks, z_goal), jnp.zeros((horizon, block_dim)), 1.0, key,
                      num_samples=num_samples, num_elites=num_elites, num_iters=num_iters)
    return mean


def cem_settings(config: ml_collections.ConfigDict) -> dict:
    """`plan`'s keyword arguments from a LeWM config's eval and model sections."""
    return dict(horizon=config.eval.horizon, block_dim=config.model.frameskip * config.model.action_dim,
                num_samples=config.eval.cem_samples, num_elites=config.eval.cem_elites,
                num_iters=config.eval.cem_iters)


def make_episode_fn(model, env, config: ml_collections.ConfigDict):
    """key -> dict(success, already_solved, start_distance, final_distance, frames, goal_frame, start_frame):
    one evaluation episode (distances: env.goal_distance, what the success test thresholds).

    The start is a uniformly random step in [history span, history span + data.max_offset] of an expert
    rollout (goals resampled on success, like the training clips), so starts come from the data
    distribution; success is checked after every env step (the paper stops an episode at success).
    """
    frameskip, history, horizon = config.model.frameskip, config.model.history, config.eval.horizon
    action_dim = config.model.action_dim
    lead = (history - 1) * frameskip                     # steps of context before the start
    jitter, offset, budget = config.data.max_offset, config.eval.goal_offset, config.eval.budget
    steps_per_plan = horizon * frameskip
    num_plans = -(-budget // steps_per_plan)
    settings = cem_settings(config)

    def episode(key):
        k_data, k_start, k_plan = jax.random.split(key, 3)
        demo = env_rollout.rollout(env, env_rollout.expert_policy(env), k_data, lead + jitter + offset,
                                   new_goal_on_success=True)
        start = lead + jax.random.randint(k_start, (), 0, jitter + 1)
        at = lambda t: jax.tree.map(lambda x: x[t], demo.states)
        goal = at(start + offset)
        z_goal = model.encode(env.render(goal)[None])[0]
        context = start - lead + frameskip * jnp.arange(history)
        z_hist = model.encode(jax.vmap(env.render)(at(context))[None])[0]
        past = jax.lax.dynamic_slice_in_dim(demo.actions, start - lead, lead)
        past = past.reshape(history - 1, frameskip * action_dim)
        state, success, shown = at(start), jnp.array(False), []
        for i in range(num_plans):
            blocks = plan(model, z_hist, past, z_goal, jax.random.fold_in(k_plan, i), **settings)
            actions = blocks.reshape(steps_per_plan, action_dim)

            def step(state, action):
                state = env.step(state, action)
                return state, (state, env.is_success(state, goal))

            state, (states, reached) = jax.lax.scan(step, state, actions)
            success = success | jnp.any(reached)
            boundary = jax.tree.map(lambda x: x[frameskip - 1::frameskip], states)     # after each block
            block_frames = jax.vmap(env.render)(boundary)
            shown.append(block_frames)
            z_new = model.encode(block_frames[None])[0]
            z_hist = jnp.concatenate([z_hist, z_new], 0)[-history:]
            past = jnp.concatenate([past, blocks], 0)[-(history - 1):]
        start_frame = env.render(at(start))
        return dict(success=success, already_solved=env.is_success(at(start), goal),
                    start_distance=env.goal_distance(at(start), goal), final_distance=env.goal_distance(state, goal),
                    frames=jnp.concatenate([start_frame[None]] + shown, 0), goal_frame=env.render(goal),
                    start_frame=start_frame)

    return episode
