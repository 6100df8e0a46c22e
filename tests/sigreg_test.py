"""SIGReg: the Gaussian floor, collapse, bf16 gradients, and sharded == unsharded."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from core import sharding as sharding_lib
from core.losses.sigreg import sigreg


def test_gaussian_data_sits_at_the_known_floor():
    # Over 20 draws the statistic at N=128, M=1024 has mean ≈ 1.07 and spread ≈ 0.1.
    values = [float(sigreg(jax.random.normal(jax.random.key(i), (128, 192)), jax.random.key(100 + i)))
              for i in range(20)]
    assert abs(np.mean(values) - 1.07) < 0.06, np.mean(values)


def test_collapsed_and_non_gaussian_data_score_high():
    collapsed = 0.01 * jax.random.normal(jax.random.key(0), (128, 192))
    assert 40 < float(sigreg(collapsed, jax.random.key(1))) < 60
    # Dimensional collapse (rank 2 of 16) is caught; an i.i.d. uniform would not be: by the CLT its random
    # projections are nearly Gaussian, which is why SIGReg targets collapse, not every non-Gaussianity.
    low_rank = jnp.concatenate([jax.random.normal(jax.random.key(2), (1024, 2)), jnp.zeros((1024, 14))], 1)
    gaussian = jax.random.normal(jax.random.key(3), (1024, 16))
    assert float(sigreg(low_rank, jax.random.key(4))) > 10 * float(sigreg(gaussian, jax.random.key(4)))


def test_time_axis_is_tested_per_step_and_averaged():
    z = jax.random.normal(jax.random.key(0), (4, 128, 32))
    key = jax.random.key(1)
    per_step = [float(sigreg(z[t], key)) for t in range(4)]
    np.testing.assert_allclose(float(sigreg(z, key)), np.mean(per_step), rtol=1e-5)


def test_bf16_inputs_give_finite_gradients():
    z = (0.01 * jax.random.normal(jax.random.key(0), (64, 32))).astype(jnp.bfloat16)
    grad = jax.grad(lambda z: sigreg(z, jax.random.key(1), num_slices=64))(z)
    assert grad.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(grad.astype(jnp.float32))))
    assert float(jnp.abs(grad.astype(jnp.float32)).max()) > 0


def test_sharded_statistic_equals_the_global_one():
    z = jax.random.normal(jax.random.key(0), (128, 32)) * 1.3 + 0.2
    key = jax.random.key(5)
    want = float(sigreg(z, key, num_slices=256))
    mesh = sharding_lib.make_mesh(dict(data=8))
    sharded = jax.device_put(z, jax.sharding.NamedSharding(mesh, P("data")))
    under_jit = float(jax.jit(functools.partial(sigreg, num_slices=256))(sharded, key))
    in_shard_map = jax.jit(jax.shard_map(
        functools.partial(sigreg, num_slices=256, axis_name="data"), mesh=mesh,
        in_specs=(P("data"), P()), out_specs=P(), check_vma=False))(sharded, key)
    np.testing.assert_allclose(under_jit, want, rtol=1e-5)
    np.testing.assert_allclose(float(in_shard_map), want, rtol=1e-5)


def test_sharded_gradient_equals_the_global_one_and_a_per_device_statistic_would_not():
    # Data-parallel training: the loss of a batch sharded over 8 devices must be the one-device SIGReg of the
    # whole batch, gradient included. A per-device statistic (no cross-device mean of the ECF) is not.
    z = jax.random.normal(jax.random.key(0), (4, 64, 32)) * 1.3 + 0.2        # [T, N, D], N sharded
    key = jax.random.key(5)
    loss = functools.partial(sigreg, key=key, num_slices=128)
    want_value, want_grad = jax.value_and_grad(loss)(z)
    mesh = sharding_lib.make_mesh(dict(data=8))
    sharded = jax.device_put(z, jax.sharding.NamedSharding(mesh, P(None, "data")))
    value, grad = jax.jit(jax.value_and_grad(loss))(sharded)
    assert grad.sharding.spec == P(None, "data")                              # gradients stay sharded
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=1e-4, atol=1e-7)

    def explicit(z, axis_name):
        return jax.shard_map(lambda z: loss(z, axis_name=axis_name), mesh=mesh, in_specs=P(None, "data"),
                             out_specs=P(), check_vma=False)(z)

    value, grad = jax.jit(jax.value_and_grad(lambda z: explicit(z, "data")))(sharded)
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(want_grad), rtol=1e-4, atol=1e-7)
    local = jax.jit(lambda z: explicit(z, None))(sharded)                     # one device's 8 rows
    assert abs(float(local) - float(want_value)) > 0.05 * float(want_value)
