"""LeWM planning: CEM over action blocks in the latent space, cost = terminal latent distance to the goal.

An episode (start from a random state of an expert rollout with its 3-frame history, goal 25 steps later,
budget 50 steps: two plans of 5 blocks × 5 steps, each executed whole before replanning) is one jitted
function of a key, vmapped over episodes. The model enters as (graphdef, state) so its weights are
arguments of the compiled program, not constants baked into it (one compile serves every checkpoint).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from core import precision
from core.envs import rollout as env_rollout
from core.planning import cem
from papers.lewm import data as lewm_data
from papers.lewm import model as lewm_model


def planning_model(graphdef, state, dtype):
    """The model the evaluation plans with, its weights cast to `dtype` (bfloat16 is the training compute
    dtype, and CEM's GEMMs over 300 samples × 3 tokens run at half their f32 time)."""
    return lewm_model.prepare_fused_predictor(precision.cast_params(nnx.merge(graphdef, state), jnp.dtype(dtype)))


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


class EvalTask(NamedTuple):
    """One evaluation episode's start and goal, cut from an expert demonstration."""
    start: Any                 # the start state; its task goal is the episode's goal ghost
    goal: Any                  # the demo's state goal_offset steps after the start
    context: Any               # states of the history frames (leading axis: history), the last one the start
    past_actions: jax.Array    # [history - 1, frameskip * A] the demo's action blocks between the context frames
    demo_actions: jax.Array    # [goal_offset, A] the demo's actions from the start to the goal (replaying them
    #                            reaches the goal's agent and block exactly: the goal is reachable)
    demo_goal_changed: jax.Array  # bool: the demo itself drew a new task goal between the first context frame
    #                               and the goal (it reached its own); the task's states do not show that


def eval_task(env, config: ml_collections.ConfigDict, k_data: jax.Array, k_start: jax.Array) -> EvalTask:
    """The start is a uniformly random step in [history span, history span + data.max_offset] of a rollout of
    the data's policy (`data.data_policy`: the expert, or Reacher's random actions; goals resampled on success,
    like the training clips, so the demo keeps moving), the goal the demo's state eval.goal_offset steps later.

    With eval.fixed_goal_ghost (default) every state of the task carries the start's task goal: a demo that
    reached its own goal inside the window drew a new one, and a goal frame showing that ghost could not be
    produced by any action (the old protocol; False reproduces it). Without resampling instead, the expert
    parks on its goal and a sizeable share of Push-T episodes start already solved (README), which the
    paper's data (episodes end at success) does not have.
    """
    frameskip, history = config.model.frameskip, config.model.history
    lead = (history - 1) * frameskip                     # steps of context before the start
    jitter, offset = config.data.max_offset, config.eval.goal_offset
    demo = env_rollout.rollout(env, lewm_data.data_policy(config, env), k_data, lead + jitter + offset,
                               new_goal_on_success=True)
    start = lead + jax.random.randint(k_start, (), 0, jitter + 1)
    at = lambda t: jax.tree.map(lambda x: x[t], demo.states)
    context_steps = start - lead + frameskip * jnp.arange(history)
    start_state, goal, context = at(start), at(start + offset), at(context_steps)
    first_goal = env.goal_vector(at(start - lead))
    changed = jnp.any(env.goal_vector(goal) != first_goal) | jnp.any(env.goal_vector(start_state) != first_goal)
    if config.eval.get("fixed_goal_ghost", True):
        ghost = env.goal_vector(start_state)
        goal, context = env.with_goal_vector(goal, ghost), env.with_goal_vector(context, ghost)
    past = jax.lax.dynamic_slice_in_dim(demo.actions, start - lead, lead)
    return EvalTask(start=start_state, goal=goal, context=context,
                    past_actions=past.reshape(history - 1, frameskip * env.action_dim),
                    demo_actions=jax.lax.dynamic_slice_in_dim(demo.actions, start, offset),
                    demo_goal_changed=changed)


def state_distance(env, state, goal, px_per_radian: float = 60.0) -> jax.Array:
    """The oracle's cost between true states: env.goal_distance (px; Push-T: the 4-vector of agent and block
    positions), plus for Push-T px_per_radian × the block-angle error (the success test's two parts)."""
    distance = env.goal_distance(state, goal)
    if hasattr(env, "block_errors"):
        distance = distance + px_per_radian * env.block_errors(state, goal)[1]
    return distance


def simulator_cost(env, state, goal):
    """plans[N, H, frameskip*A] -> state_distance after executing each plan in the true simulator from
    `state` (terminal cost, as the latent one)."""
    def cost(plans):
        actions = plans.reshape(plans.shape[0], -1, env.action_dim)

        def final(actions):
            return jax.lax.scan(lambda s, a: (env.step(s, a), None), state, actions)[0]

        return jax.vmap(lambda a: state_distance(env, final(a), goal))(actions)
    return cost


def plan_with_simulator(env, state, goal, key, *, horizon: int, block_dim: int, num_samples: int,
                        num_elites: int, num_iters: int):
    """The oracle: the same CEM as `plan`, with the true simulator as the model and a state cost."""
    mean, _ = cem.cem(simulator_cost(env, state, goal), jnp.zeros((horizon, block_dim)), 1.0, key,
                      num_samples=num_samples, num_elites=num_elites, num_iters=num_iters)
    return mean


class Planner(NamedTuple):
    """How an episode chooses its actions, whatever it plans with. `memory` is whatever the planner carries
    between plans (a pytree: the latent history, or just the goal).

      begin(task) -> memory                            once, from the episode's EvalTask
      plan(memory, state, key) -> blocks [H, block_dim]  the next plan, from the true current state
      observe(memory, block_frames, blocks) -> memory  after a plan ran: the frames after each block, the blocks

    Build one with `latent_planner` (a LeWM, from pixels) or `simulator_planner` (the oracle).
    """
    begin: Callable[[EvalTask], Any]
    plan: Callable[[Any, Any, jax.Array], jax.Array]
    observe: Callable[[Any, jax.Array, jax.Array], Any]


def latent_planner(model, env, config: ml_collections.ConfigDict) -> Planner:
    """CEM on the latent cost: the goal and the history frames are encoded once, the frames after every
    executed block (and the blocks) are appended to the model's history; the true state is never read."""
    history, settings = config.model.history, cem_settings(config)

    def begin(task):
        z_goal = model.encode(env.render(task.goal)[None])[0]
        z_hist = model.encode(jax.vmap(env.render)(task.context)[None])[0]
        return z_hist, task.past_actions, z_goal

    def plan_next(memory, state, key):
        z_hist, past, z_goal = memory
        return plan(model, z_hist, past, z_goal, key, **settings)

    def observe(memory, block_frames, blocks):
        z_hist, past, z_goal = memory
        z_new = model.encode(block_frames[None])[0]
        return (jnp.concatenate([z_hist, z_new], 0)[-history:], jnp.concatenate([past, blocks], 0)[-(history - 1):],
                z_goal)

    return Planner(begin, plan_next, observe)


def simulator_planner(env, config: ml_collections.ConfigDict) -> Planner:
    """The oracle: the same CEM with the true simulator as the model and `state_distance` to the goal state as
    the cost; it needs no history, only the goal."""
    settings = cem_settings(config)
    return Planner(begin=lambda task: task.goal,
                   plan=lambda goal, state, key: plan_with_simulator(env, state, goal, key, **settings),
                   observe=lambda goal, block_frames, blocks: goal)


def make_episode_fn(planner: Planner, env, config: ml_collections.ConfigDict):
    """key -> dict(success, already_solved, start_distance, final_distance, frames, goal_frame, start_frame,
    demo_goal_changed): one evaluation episode (distances: env.goal_distance, what the success test
    thresholds). `planner` is a `Planner` (latent_planner: a LeWM from pixels; simulator_planner: the oracle).
    Plans of horizon blocks are executed whole, then replanned, until the eval.budget steps are spent;
    success is checked after every env step (the paper stops an episode at success). The task is
    `eval_task`'s.
    """
    if not isinstance(planner, Planner):
        raise ValueError(f"make_episode_fn needs a Planner, got {type(planner).__name__}: build one with "
                         f"latent_planner(model, env, config) or simulator_planner(env, config).")
    frameskip, horizon, action_dim = config.model.frameskip, config.eval.horizon, config.model.action_dim
    steps_per_plan = horizon * frameskip
    num_plans = -(-config.eval.budget // steps_per_plan)

    def episode(key):
        k_data, k_start, k_plan = jax.random.split(key, 3)
        task = eval_task(env, config, k_data, k_start)
        goal = task.goal
        memory = planner.begin(task)
        state, success, shown = task.start, jnp.array(False), []
        for i in range(num_plans):
            blocks = planner.plan(memory, state, jax.random.fold_in(k_plan, i))
            actions = blocks.reshape(steps_per_plan, action_dim)

            def step(state, action):
                state = env.step(state, action)
                return state, (state, env.is_success(state, goal))

            state, (states, reached) = jax.lax.scan(step, state, actions)
            success = success | jnp.any(reached)
            boundary = jax.tree.map(lambda x: x[frameskip - 1::frameskip], states)     # after each block
            block_frames = jax.vmap(env.render)(boundary)
            shown.append(block_frames)
            memory = planner.observe(memory, block_frames, blocks)
        start_frame = env.render(task.start)
        return dict(success=success, already_solved=env.is_success(task.start, goal),
                    start_distance=env.goal_distance(task.start, goal), final_distance=env.goal_distance(state, goal),
                    start_cost=state_distance(env, task.start, goal), final_cost=state_distance(env, state, goal),
                    frames=jnp.concatenate([start_frame[None]] + shown, 0), goal_frame=env.render(goal),
                    start_frame=start_frame, demo_goal_changed=task.demo_goal_changed)

    return episode
