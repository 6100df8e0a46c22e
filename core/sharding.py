"""Mesh factory and logical-axis rules.

Parameters and activations name their dimensions logically (`batch`, `embed`, `mlp`, ...); a rule table maps
each logical name to mesh axes (`data`, `fsdp`, `tensor`). Changing the parallelism is a config change.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. `batch` spreads over data *and* fsdp (fsdp is data parallelism with sharded
# params); weights shard their `embed` dim over fsdp and their wide dims over tensor.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("layers", None),
)


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    """The `mesh` section of a config; -1 means "all remaining devices"."""
    return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def make_mesh(config: ml_collections.ConfigDict | dict | None = None,
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """Builds a (data, fsdp, tensor) mesh; raises one ValueError if the shape does not fit the devices."""
    config = dict(config or mesh_config())
    unknown = set(config) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"Unknown mesh axes {sorted(unknown)}; use {MESH_AXES}.")
    devices = list(devices) if devices is not None else jax.devices()
    shape = [int(config.get(axis, 1)) for axis in MESH_AXES]
    if shape.count(-1) > 1:
        raise ValueError(f"Mesh shape {dict(zip(MESH_AXES, shape))} has more than one -1; at most one axis may fill.")
    known = math.prod(s for s in shape if s != -1)
    if any(s == 0 or s < -1 for s in shape) or len(devices) % known:
        raise ValueError(
            f"Mesh shape {dict(zip(MESH_AXES, shape))} does not fit {len(devices)} devices; "
            "choose axis sizes whose product equals the device count.")
    shape = [len(devices) // known if s == -1 else s for s in shape]
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"Mesh shape {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices but {len(devices)} "
            "are available; set mesh.data=-1 or sizes whose product equals the device count.")
    return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def logical_to_spec(logical: Sequence[str | None] | None, rules=LOGICAL_RULES) -> P:
    """Maps logical dimension names to a PartitionSpec over mesh axes."""
    if logical is None:
        return P()
    table = dict(rules)
    return P(*(table.get(name) if name is not None else None for name in logical))


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> P:
    """Replicates any dimension the mesh axes do not divide, so small smoke models still place."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = math.prod(mesh.shape[a] for a in names) if names else 1
        fitted.append(axes if names and dim % size == 0 else None)
    return P(*fitted)


def state_shardings(state: Any, mesh: jax.sharding.Mesh, rules=LOGICAL_RULES) -> Any:
    """NamedShardings for every leaf of a pytree of nnx Variables / arrays, from their logical names."""
    def leaf_sharding(leaf):
        value = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
        names = leaf.get_metadata().get("out_sharding") if isinstance(leaf, nnx.Variable) else None
        shape = np.shape(value)
        return NamedSharding(mesh, _fit_spec(logical_to_spec(names, rules), shape, mesh))
    return jax.tree.map(leaf_sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 2, stacked: bool = False) -> NamedSharding:
    """Batch dim over data+fsdp, the rest replicated. The batch dim leads, or comes second when `stacked`
    (several steps' batches stacked on a leading step axis, see core.train's steps_per_call)."""
    lead = (None,) if stacked else ()
    return NamedSharding(mesh, P(*lead, ("data", "fsdp"), *([None] * (ndim - 1 - len(lead)))))


def shard_batch(batch: Any, mesh: jax.sharding.Mesh, stacked: bool = False) -> Any:
    """Places a host batch (process-local slice) onto the mesh, batch dim sharded over data+fsdp; with
    `stacked`, every leaf is [steps, batch, ...]."""
    def put(x):
        if isinstance(x, jax.Array) and x.is_fully_addressable and jax.process_count() == 1:
            return jax.device_put(x, batch_sharding(mesh, x.ndim, stacked))   # generated on device: no host round trip
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim, stacked), x)
    leaves = jax.tree.leaves(batch)
    batch_axis = mesh.shape["data"] * mesh.shape["fsdp"]
    local_axis = max(1, batch_axis // jax.process_count())
    dim = 1 if stacked else 0
    for leaf in leaves:
        if np.ndim(leaf) <= dim or np.shape(leaf)[dim] % local_axis:
            raise ValueError(
                f"Batch dimension {np.shape(leaf)[dim:dim + 1]} is not divisible by the {local_axis} local "
                "data-parallel shards; choose a batch size divisible by data*fsdp.")
    return jax.tree.map(put, batch)


def to_single_device(tree: Any, device: jax.Device | None = None) -> Any:
    """Copies of `tree`'s arrays on one device whose types carry no mesh.

    Arrays that were placed on a mesh keep that mesh in their type even after `jax.device_put` to one
    device; jitted functions then return outputs typed with the mesh, and fresh inputs of the same shape
    (e.g. a new KV cache) miss the compile cache. A host round trip drops it.
    """
    device = device or jax.devices()[0]
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x), device), tree)
