"""LeWM evaluation: Wilson interval, planning with an oracle world model succeeds (and an untrained one
does not crash), surprise flags teleports, and the smoke train -> plan -> surprise pipeline writes its files."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core import config as config_lib
from papers.lewm import evaluate, surprise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(**overrides):
    config = config_lib.load_config(os.path.join(ROOT, "configs/lewm/tworoom.py") + ":smoke")
    return config_lib.apply_overrides(config, overrides) if overrides else config


class AgentOracle(nnx.Module):
    """A hand-written TwoRoom world model: the latent is the agent's pixel position (the saturation-weighted
    centroid: background and walls are grey-scale, the agent is a saturated colour), and the predictor
    moves it by speed × the sum of the block's actions (walls ignored)."""

    def __init__(self, frameskip=5, action_dim=2, speed=5.0):
        self.frameskip, self.action_dim, self.speed = frameskip, action_dim, speed

    def encode(self, pixels):
        x = pixels.astype(jnp.float32)
        weight = x.max(-1) - x.min(-1)                                  # [..., H, W]
        rows, cols = jnp.arange(x.shape[-3], dtype=jnp.float32), jnp.arange(x.shape[-2], dtype=jnp.float32)
        total = weight.sum((-2, -1)) + 1e-6
        return jnp.stack([(weight * cols).sum((-2, -1)) / total,
                          (weight * rows[:, None]).sum((-2, -1)) / total], -1)

    def predict(self, z_hist, blocks, dropout_key=None):
        moves = jnp.clip(blocks.reshape(blocks.shape[:-1] + (self.frameskip, self.action_dim)), -1, 1)
        return z_hist + self.speed * moves.sum(-2)

    def rollout(self, z_hist, past_blocks, plan_blocks):
        moves = jnp.clip(plan_blocks.reshape(plan_blocks.shape[:-1] + (self.frameskip, self.action_dim)), -1, 1)
        return z_hist[:, -1:] + self.speed * jnp.cumsum(moves.sum(-2), 1)


def test_wilson_interval():
    low, high = evaluate.wilson_interval(0, 4)
    assert low == 0.0 and high == pytest.approx(0.4899, abs=1e-4)
    low, high = evaluate.wilson_interval(43, 50)                  # 86%: the interval is asymmetric about p
    assert low == pytest.approx(0.7384, abs=1e-3) and high == pytest.approx(0.9305, abs=1e-3)
    with pytest.raises(ValueError, match="episode"):
        evaluate.wilson_interval(0, 0)


def test_cem_with_an_oracle_model_reaches_goals_and_an_idle_plan_does_not():
    config = smoke_config(**{"eval.cem_samples": 64, "eval.cem_elites": 8, "eval.cem_iters": 4,
                             "eval.num_episodes": 8})
    report = evaluate.evaluate_success(AgentOracle(), config)
    results = report["results"]
    assert results["frames"].shape[:2] == (8, 1 + 10) and results["frames"].dtype == np.uint8
    assert 0.0 <= report["ci_low"] <= report["success"] <= report["ci_high"] <= 1.0
    assert report["success"] >= 0.75, report
    # The same episodes with zero actions (CEM with one iteration around 0 and σ≈0 cannot move) fail more.
    idle = evaluate.evaluate_success(AgentOracle(speed=0.0), config)
    assert idle["success"] < report["success"] and idle["final_distance_mean"] > report["final_distance_mean"]


def test_plan_timing_at_batch_one_and_batched():
    config = smoke_config(**{"model.embed_dim": 2, "eval.cem_samples": 16, "eval.cem_elites": 4,
                             "eval.cem_iters": 2})
    assert evaluate.time_one_plan(AgentOracle(), config, repeats=1) > 0
    assert evaluate.time_one_plan(AgentOracle(), config, repeats=1, batch=4) > 0


def test_surprise_flags_teleports_but_not_recolouring_with_an_oracle_model(tmp_path):
    config = smoke_config()
    errors = surprise.surprise_curves(AgentOracle(), config, num_episodes=16, num_frames=9, perturb_frame=5)
    assert errors.shape == (3, 16, 9) and np.isnan(errors[:, :, :3]).all()
    np.testing.assert_allclose(errors[1, :, 3:5], errors[0, :, 3:5], atol=1e-3)   # identical before it
    tests = surprise.paired_tests(errors, perturb_frame=5)
    assert tests["teleport"]["t_pvalue"] < 0.01 and tests["teleport"]["wilcoxon_pvalue"] < 0.01
    assert abs(tests["colour"]["mean_increase"]) < 0.01 * tests["teleport"]["mean_increase"]
    surprise.plot(errors, str(tmp_path / "s.png"), perturb_frame=5)
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_smoke_train_then_plan_then_surprise_writes_results(tmp_path):
    from launch import eval_lewm

    # One plan of 25 steps and 3 training steps keep the compiled programs small (CPU CI).
    config = smoke_config(**{"train.num_steps": 4, "train.checkpoint_every": 2, "eval.budget": 25,
                             "eval.num_episodes": 3, "eval.cem_iters": 1})
    eval_lewm.main(config, str(tmp_path), all_checkpoints=True)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert [row["step"] for row in report["success_vs_steps"]] == [2, 4]
    assert report["episodes"] == config.eval.num_episodes
    assert 0.0 <= report["ci_low"] <= report["success"] <= report["ci_high"] <= 1.0
    assert report["plan_s"] > 0 and set(report["surprise"]) == {"colour", "teleport"}
    assert (tmp_path / "planning.gif").stat().st_size > 1000 and (tmp_path / "surprise.png").exists()


@functools.lru_cache(maxsize=None)
def eval_tasks(env_name, num_episodes=24):
    """eval_task under the fixed and the old protocol (one program), on the full config's data window (the
    smoke one is too short for the demos to finish their goals)."""
    from papers.lewm import data as lewm_data, planning

    config = config_lib.load_config(os.path.join(ROOT, f"configs/lewm/{env_name}.py"))
    if env_name == "pusht":          # the fast expert finishes more goals inside the window: more cases to check
        config = config_lib.apply_overrides(config, {"env.params.expert_max_action": 1.0})
    old_config = config_lib.apply_overrides(config, {"eval.fixed_goal_ghost": False})
    env = lewm_data.make_env(config)

    def both(key):
        k_data, k_start, _ = jax.random.split(key, 3)
        return (planning.eval_task(env, config, k_data, k_start),
                planning.eval_task(env, old_config, k_data, k_start))

    tasks, old = jax.jit(jax.vmap(both))(evaluate.episode_keys(config, num_episodes))
    return env, config, jax.device_get(tasks), jax.device_get(old)


@pytest.mark.parametrize("env_name", ["pusht", "tworoom"])
def test_evaluation_goal_ghost_is_fixed_within_an_episode(env_name):
    env, _, tasks, old = eval_tasks(env_name)
    goal_vector = jax.vmap(env.goal_vector)
    changed = tasks.demo_goal_changed
    assert changed.any() and not changed.all(), changed        # the demos do draw new goals: the check can fail
    ghost = np.asarray(goal_vector(tasks.start))                                          # [E, G]
    np.testing.assert_array_equal(np.asarray(goal_vector(tasks.goal)), ghost)
    context = np.asarray(jax.vmap(goal_vector)(tasks.context))                            # [E, history, G]
    np.testing.assert_array_equal(context, np.broadcast_to(ghost[:, None], context.shape))
    # The old protocol shows the goal the demo drew after its own success, in exactly those episodes.
    differs = np.any(np.asarray(goal_vector(old.goal)) != np.asarray(goal_vector(old.start)), -1)
    assert differs.any() and not differs[~changed].any()
    # Only the ghost changed: the goal's agent (and block) are the demo's.
    np.testing.assert_array_equal(np.asarray(jax.vmap(env.goal_distance)(tasks.goal, old.goal)), 0.0)


def test_replaying_the_demo_reaches_the_goal_and_the_simulator_cost_ranks_it_first():
    from papers.lewm import planning

    env, config, tasks, _ = eval_tasks("pusht")
    tasks = jax.tree.map(lambda x: x[:4], tasks)

    def replay_and_costs(task):
        end = jax.lax.scan(lambda s, a: (env.step(s, a), None), task.start, task.demo_actions)[0]
        plans = jnp.stack([task.demo_actions, jnp.zeros_like(task.demo_actions)]).reshape(2, config.eval.horizon, -1)
        return env.is_success(end, task.goal), planning.simulator_cost(env, task.start, task.goal)(plans)

    reached, costs = jax.device_get(jax.jit(jax.vmap(replay_and_costs))(tasks))
    assert reached.all() and (costs[:, 0] < 1e-3).all() and (costs[:, 1] > 1.0).all(), costs


def test_oracle_with_the_true_simulator_solves_tworoom_episodes():
    config = smoke_config(**{"eval.cem_samples": 48, "eval.cem_elites": 6, "eval.cem_iters": 3})
    report = evaluate.evaluate_oracle(config, num_episodes=6, chunk=3)
    assert report["episodes"] == 6 and report["success"] >= 0.75, report
    assert report["final_distance_mean"] < report["start_distance_mean"]
    with pytest.raises(ValueError, match="simulator_planner"):    # the old string interface gets told the new one
        from papers.lewm import planning
        planning.make_episode_fn("simulator", None, config)
