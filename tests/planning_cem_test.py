"""Planners find the minimum of toy costs, are deterministic given the key, and vmap over problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.planning import cem as planners

TARGET = jnp.array([[0.3, -0.5], [0.7, 0.1], [-0.2, 0.9]])


def quadratic(target):
    return lambda plans: jnp.sum((plans - target) ** 2, axis=(1, 2))


# MPPI keeps its sampling std (1 here), so its mean stays within sampling noise (~0.2) of the optimum.
@pytest.mark.parametrize("planner,tol", [(planners.cem, 0.02), (planners.mppi, 0.25)])
def test_planner_finds_the_quadratic_minimum(planner, tol):
    plan, info = jax.jit(lambda k: planner(quadratic(TARGET), jnp.zeros((3, 2)), 1.0, k))(jax.random.key(0))
    np.testing.assert_allclose(plan, TARGET, atol=tol)
    assert info["best_cost"][-1] <= info["best_cost"][0]


def test_random_shooting_beats_the_initial_mean():
    plan, info = planners.random_shooting(quadratic(TARGET), jnp.zeros((3, 2)), 1.0, jax.random.key(0))
    assert float(quadratic(TARGET)(plan[None])[0]) < float(quadratic(TARGET)(jnp.zeros((1, 3, 2)))[0])


def test_cem_is_deterministic_and_vmaps_over_problems():
    targets = jnp.stack([TARGET, -TARGET])
    solve = jax.jit(jax.vmap(lambda t, k: planners.cem(quadratic(t), jnp.zeros((3, 2)), 1.0, k)[0]))
    keys = jax.random.split(jax.random.key(1), 2)
    plans = solve(targets, keys)
    np.testing.assert_array_equal(plans, solve(targets, keys))
    np.testing.assert_allclose(plans, targets, atol=0.02)


def test_bad_elite_count_is_refused():
    with pytest.raises(ValueError, match="num_elites"):
        planners.cem(quadratic(TARGET), jnp.zeros((3, 2)), 1.0, jax.random.key(0), num_samples=10, num_elites=20)
