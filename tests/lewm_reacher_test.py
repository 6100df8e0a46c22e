"""Reacher (core/envs/reacher.py) and LeWM's action standardisation: env shapes, determinism and dynamics; the
expert reaches its targets; CEM over the true simulator solves the smoke episodes; standardisation round-trips
and gives the cost of a model fed pre-standardised actions; the smoke train -> plan pipeline runs on Reacher."""

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core import config as config_lib
from core.envs import make_env
from core.envs import rollout as rollout_lib
from core.envs.reacher import Reacher, ReacherState
from papers.lewm import data as lewm_data
from papers.lewm import evaluate, model as lewm_model, planning
from papers.lewm import train as lewm_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = Reacher()


def smoke_config(**overrides):
    config = config_lib.load_config(os.path.join(ROOT, "configs/lewm/reacher.py") + ":smoke")
    return config_lib.apply_overrides(config, overrides) if overrides else config


def _state(joints, vel=(0.0, 0.0), goal=(0.0, 0.0)):
    return ReacherState(joints=jnp.array(joints, jnp.float32), joint_vel=jnp.array(vel, jnp.float32),
                        goal_joints=jnp.array(goal, jnp.float32), arm_colour=jnp.array([0.7, 0.5, 0.3]),
                        last_action=jnp.zeros(2))


def test_registered_shapes_vmap_and_determinism():
    assert isinstance(make_env("reacher"), Reacher)
    states = jax.vmap(ENV.reset)(jax.random.split(jax.random.key(0), 4))
    assert states.joints.shape == (4, 2) and states.joints.dtype == jnp.float32
    actions = jax.random.uniform(jax.random.key(1), (4, 2), minval=-1, maxval=1)
    stepped = jax.jit(jax.vmap(ENV.step))(states, actions)
    frames = jax.jit(jax.vmap(ENV.render))(stepped)
    assert frames.shape == (4, 224, 224, 3) and frames.dtype == jnp.uint8
    one = ENV.step(jax.tree.map(lambda a: a[2], states), actions[2])
    np.testing.assert_allclose(stepped.joints[2], one.joints, rtol=1e-6)
    np.testing.assert_array_equal(frames[2], jax.jit(ENV.render)(one))
    again = jax.vmap(ENV.reset)(jax.random.split(jax.random.key(0), 4))        # same key, same episode
    np.testing.assert_array_equal(states.joints, again.joints)
    assert np.all(np.abs(states.joints[:, 1]) <= ENV.wrist_limit)
    # The arm is drawn where its kinematics put it: the fingertip pixel is dark, a far corner is floor.
    tip = np.asarray(ENV.fingertip(one)) / ENV.world_size * ENV.image_size
    frame = np.asarray(frames[2]).astype(int)
    assert frame[int(tip[1]), int(tip[0])].sum() < 300 and frame[2, 2].sum() > 600


def test_dynamics_lag_speed_wrap_and_wrist_limit():
    state = _state([3.1, 0.0])
    for _ in range(30):
        state = ENV.step(state, jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(state.joint_vel, [ENV.max_speed, 0.0], atol=1e-5)   # settles at max_speed
    assert -np.pi <= float(state.joints[0]) < np.pi                                # shoulder wrapped
    state = ENV.step(_state([0.0, ENV.wrist_limit - 0.01], vel=(0.0, 0.2)), jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(state.joints[1], ENV.wrist_limit, rtol=1e-6)
    assert float(state.joint_vel[1]) == 0.0                                        # stops dead at the limit
    # Success: every joint within 0.05 rad, the shoulder error wrapped across +-pi.
    assert ENV.is_success(_state([np.pi - 0.02, 0.3]), _state([-np.pi + 0.02, 0.33]))
    assert not ENV.is_success(_state([0.0, 0.3]), _state([0.0, 0.36]))


def test_expert_reaches_its_targets():
    keys = jax.random.split(jax.random.key(1), 32)
    trajs = jax.jit(jax.vmap(lambda k: rollout_lib.rollout(ENV, rollout_lib.expert_policy(ENV), k, 100)))(keys)
    reached = jax.vmap(jax.vmap(lambda s: ENV.is_success(s, ENV.goal_state(s))))(trajs.states)
    assert bool(jnp.all(jnp.any(reached, axis=1)))


def test_oracle_solves_the_smoke_episodes():
    config = smoke_config(**{"eval.cem_samples": 128, "eval.cem_elites": 12, "eval.cem_iters": 10})
    report = evaluate.evaluate_oracle(config)
    assert report["episodes"] == 4 and report["already_solved"] == 0.0
    assert report["success"] == 1.0, report


def lag1_correlation(actions):
    """Correlation of consecutive actions (per column, pooled): ~0 for independent draws."""
    a = np.asarray(actions).reshape(actions.shape[0], -1, 2)
    return float(np.corrcoef(a[:, :-1].reshape(-1), a[:, 1:].reshape(-1))[0, 1])


def test_config_data_follow_the_official_reacher_data():
    # swm's Reacher draws no target (render_target=0) and its data, training and evaluation episodes alike, are
    # uniform random actions (collect_reacher.py); the evaluation's goals then lie ~0.3 rad away (largest joint),
    # as dm_control's arm's under random actions, against ~1.8 for the expert's demos.
    config = smoke_config()
    env = lewm_data.make_env(config)
    a, b = _state([0.3, -0.5], goal=(1.0, 1.0)), _state([0.3, -0.5], goal=(-2.0, 0.5))
    assert not np.array_equal(ENV.render(a), ENV.render(b))                 # the env's default draws the target
    np.testing.assert_array_equal(env.render(a), env.render(b))             # the config's does not
    keys = evaluate.episode_keys(config, 16)

    @jax.jit
    def tasks_and_batch(keys):
        tasks = jax.vmap(lambda k: planning.eval_task(env, config, *jax.random.split(k)))(keys)
        return jax.vmap(env.goal_distance)(tasks.start, tasks.goal), tasks.demo_actions

    distance, demo_actions = jax.device_get(tasks_and_batch(keys))
    assert 0.15 < float(np.mean(distance)) < 0.6, distance                  # (the expert's: 1.8)
    assert abs(lag1_correlation(demo_actions)) < 0.2                         # independent draws
    train_actions = lewm_data.make_batch_fn(config, env)(0)["actions"]      # [B, 4 blocks, 5 steps x 2]
    assert abs(lag1_correlation(train_actions)) < 0.25
    np.testing.assert_allclose(np.std(np.asarray(train_actions)), 1 / np.sqrt(3), rtol=0.15)   # U[-1, 1]
    with pytest.raises(ValueError, match="data.policy"):
        lewm_data.data_policy(smoke_config(**{"data.policy": "sac"}), env)


def random_model(config, seed):
    """A LeWM with random weights (std 0.2, so AdaLN-zero's action path is switched on) and unit BatchNorm
    statistics, drawn with numpy: no initialiser runs, so nothing compiles."""
    graphdef, params, rest = nnx.split(nnx.eval_shape(lambda: lewm_model.LeWM(config, rngs=nnx.Rngs(0))),
                                       nnx.Param, ...)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda x: jnp.asarray(0.2 * rng.standard_normal(x.shape), x.dtype), params)
    rest = jax.tree.map(lambda x: jnp.asarray(np.ones(x.shape, x.dtype)), rest)
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return model


def test_action_standardisation_round_trips_and_matches_a_model_fed_standardised_actions():
    mean, std = jnp.array([0.3, -0.2]), jnp.array([0.5, 2.0])
    cfg = lewm_model.LeWMConfig.smoke(dropout=0.0, predictor_depth=1, encoder_depth=1)   # latent_cost never encodes
    on = random_model(dataclasses.replace(cfg, action_standardization=True), 2)
    off = random_model(cfg, 2)
    on.set_action_statistics(mean, std)
    chex.assert_trees_all_equal(nnx.state(off, nnx.Param), nnx.state(on, nnx.Param))   # only the transform differs
    k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
    z_hist, z_goal = jax.random.normal(k1, (3, cfg.embed_dim)), jax.random.normal(k2, (cfg.embed_dim,))
    past = jax.random.uniform(k3, (2, 10), minval=-1, maxval=1)
    plans = jax.random.uniform(k4, (8, 2, 10), minval=-1, maxval=1)     # raw actions, as CEM samples them

    @jax.jit
    def results(past, plans):
        standardize = lambda blocks: lewm_model.standardize_actions(blocks, mean, std)
        z = standardize(plans)
        return dict(z=z, back=lewm_model.unstandardize_actions(z, mean, std),
                    cost_on=planning.latent_cost(on, z_hist, past, z_goal)(plans),
                    cost_off=planning.latent_cost(off, z_hist, standardize(past), z_goal)(z),
                    raw_off=planning.latent_cost(off, z_hist, past, z_goal)(plans))

    r = jax.device_get(results(past, plans))
    np.testing.assert_allclose(r["back"], plans, atol=1e-6)                      # round trip
    columns = np.asarray(plans).reshape(-1, 2)
    np.testing.assert_allclose(r["z"].reshape(-1, 2), (columns - np.asarray(mean)) / np.asarray(std), rtol=1e-5)
    np.testing.assert_allclose(r["cost_on"], r["cost_off"], rtol=1e-4)
    spread = np.ptp(r["cost_on"])                                                 # the actions matter ...
    assert spread > 0.1 and np.max(np.abs(r["raw_off"] - r["cost_on"])) > 0.1 * spread   # ... and so does the z-score
    with pytest.raises(ValueError, match="action_standardization"):
        off.set_action_statistics(mean, std)


def test_smoke_training_stores_action_statistics_and_plans(tmp_path, monkeypatch):
    # One plan of 25 steps, one CEM iteration and 2 training steps keep the compiled programs small (CPU CI).
    config = smoke_config(**{"train.num_steps": 2, "optim.total_steps": 2, "train.checkpoint_every": 2,
                             "train.log_every": 1, "data.action_stats_batches": 2, "eval.num_episodes": 1,
                             "eval.budget": 25, "eval.cem_iters": 1})
    made = []
    monkeypatch.setattr(lewm_train, "make_batch_fn", lambda c: made.append(lewm_data.make_batch_fn(c)) or made[-1])
    result = lewm_train.train_lewm(config, str(tmp_path))
    assert np.isfinite(result.history[-1]["loss"])
    model = lewm_train.restore_model(config, str(tmp_path))
    mean, std = lewm_data.action_statistics(made[0], 2, config.model.action_dim)    # the training stream's
    np.testing.assert_allclose(model.action_mean[...], mean, rtol=1e-6)     # restored from the checkpoint
    np.testing.assert_allclose(model.action_std[...], std, rtol=1e-6)
    assert np.all(np.asarray(std) > 0.2)                                    # the expert's actions spread
    report = evaluate.evaluate_success(model, config)
    assert report["episodes"] == 1 and report["results"]["frames"].shape == (1, 6, 224, 224, 3)
