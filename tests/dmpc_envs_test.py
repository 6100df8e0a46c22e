"""MJX locomotion envs: one step agrees with MuJoCo's CPU simulator; the broken ankle and novel rewards."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from papers.dmpc import envs


def test_broken_ankle_scales_only_the_right_foot_gear():
    healthy, broken = envs.load_mj_model("walker2d"), envs.load_mj_model("walker2d", ankle_gear_scale=0.25)
    foot = mujoco.mj_name2id(healthy, mujoco.mjtObj.mjOBJ_JOINT, "foot_joint")
    changed = np.flatnonzero(healthy.actuator_gear[:, 0] != broken.actuator_gear[:, 0])
    assert changed.tolist() == [int(np.flatnonzero(healthy.actuator_trnid[:, 0] == foot)[0])]
    assert broken.actuator_gear[changed[0], 0] == pytest.approx(0.25 * healthy.actuator_gear[changed[0], 0])
    with pytest.raises(ValueError, match="only for walker2d"):
        envs.load_mj_model("hopper", ankle_gear_scale=0.5)
    with pytest.raises(ValueError, match="Unknown locomotion env"):
        envs.make_env("ant")


def test_gymnasium_v5_assets_and_sizes():
    for name, (nq, nu) in {"halfcheetah": (9, 6), "hopper": (6, 3), "walker2d": (9, 6)}.items():
        model = envs.load_mj_model(name)
        assert (model.nq, model.nu) == (nq, nu)
        assert model.opt.timestep * envs.SPECS[name].frame_skip == pytest.approx(0.05 if name == "halfcheetah" else 0.008)


def test_novel_rewards_read_the_right_observation_entries():
    rewards = envs.novel_rewards("walker2d")
    obs = jnp.zeros(17).at[0].set(1.45).at[8].set(-2.0)          # standing tall, moving backwards at 2 m/s
    a = jnp.zeros(6)
    assert float(rewards["backward"](obs, a)) == pytest.approx(2.0 + 1.0)
    assert float(rewards["jump"](obs, a)) == pytest.approx(10 * 0.2 + 1.0, rel=1e-5)
    fallen = obs.at[0].set(0.5)
    assert float(rewards["backward"](fallen, a)) == pytest.approx(2.0)   # no alive bonus when unhealthy


def test_toy_env_defect_weakens_its_second_actuator():
    env, broken = envs.make("toy"), envs.make("toy", 0.25)
    import jax
    s = env.reset(jax.random.key(0))
    a = jnp.array([0.0, 1.0])
    assert float(env.step(s, a).pipeline_state.qd[1]) > float(broken.step(s, a).pipeline_state.qd[1])


# Compiling one MJX step takes 1-5 minutes on a 2-core CPU, so these run with -m slow (and on the GPU inside
# benchmarks.dmpc, which records the same differences in dmpc.json).
@pytest.mark.slow
@pytest.mark.parametrize("name", envs.ENV_NAMES)
def test_one_mjx_step_matches_cpu_mujoco(name):
    from papers.dmpc import checks
    diff = checks.mjx_vs_cpu_step(name)
    assert diff["qpos"] < 1e-5 and diff["qvel"] < 1e-3, diff


def test_mjx_envs_use_the_cheap_solver_budget_and_none_keeps_the_xml():
    assert envs.SOLVER_ITERATIONS == (4, 8)
    for ankle in (1.0, 0.25):
        model = envs.load_mj_model("walker2d", ankle_gear_scale=ankle)
        assert (model.opt.iterations, model.opt.ls_iterations) == envs.SOLVER_ITERATIONS
    xml = envs.load_mj_model("hopper", solver_iterations=None)
    assert (xml.opt.iterations, xml.opt.ls_iterations) == (100, 50)
    env = envs.make("walker2d", 0.25)          # the broken-ankle MJX env gets the same budget
    assert (int(env.sys.opt.iterations), int(env.sys.opt.ls_iterations)) == envs.SOLVER_ITERATIONS


@pytest.mark.slow
def test_state_from_obs_rebuilds_the_observed_mjx_state():
    env = envs.make("halfcheetah")
    state = env.step(env.reset(jax.random.key(0)), 0.5 * jnp.ones(env.action_size))
    rebuilt = env.state_from_obs(state.obs)
    np.testing.assert_allclose(rebuilt.obs, state.obs, atol=1e-6)
    action = -0.3 * jnp.ones(env.action_size)
    np.testing.assert_allclose(env.step(rebuilt, action).obs, env.step(state, action).obs, atol=1e-4)
