"""brax 0.14.2's agents call `jax.device_put_replicated` / `jax.device_put_sharded`, removed in jax 0.11.

`install()` puts back two equivalents written with `jax.device_put` and a `NamedSharding` over the devices
(a leading axis of length len(devices), one slice per device), which is what brax's pmapped code consumes.
Idempotent; it touches nothing when jax still has the functions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _stacked_sharding(devices):
    mesh = jax.sharding.Mesh(np.asarray(devices), ("devices",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices"))


def device_put_sharded(shards, devices):
    """shards: a list (one pytree per device) -> one pytree of arrays with a leading device axis."""
    if len(shards) != len(devices):
        raise ValueError(f"device_put_sharded needs one shard per device, got {len(shards)} for {len(devices)}.")
    stacked = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *shards)
    return jax.device_put(stacked, _stacked_sharding(devices))


def device_put_replicated(value, devices):
    """value -> the same value stacked len(devices) times along a new leading axis, one copy per device."""
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (len(devices),) + np.shape(x)), value)
    return jax.device_put(stacked, _stacked_sharding(devices))


def install() -> None:
    if not hasattr(jax, "device_put_replicated"):
        jax.device_put_replicated = device_put_replicated
    if not hasattr(jax, "device_put_sharded"):
        jax.device_put_sharded = device_put_sharded
