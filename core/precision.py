"""Dtype casting for parameter trees and NNX modules (used by the trainer, planners and benchmarks)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating leaf of `tree` cast to `dtype` (None: unchanged); integer and key leaves keep theirs."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def cast_params(model: nnx.Module, dtype: Any) -> nnx.Module:
    """`model` with its nnx.Param leaves cast to `dtype`; other state (BatchNorm statistics) keeps its own."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return nnx.merge(graphdef, cast_floating(params, dtype), rest)
