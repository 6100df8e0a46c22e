"""Checkpoints: the only module that imports orbax.

Async save, keep-N, resume from the workdir. Atomicity comes from orbax: a step is written under a temporary
name and renamed when finalized, and `latest_step` only sees finalized steps, so an interrupted save is never
loaded. Restores are checked against the expected tree (shapes and dtypes) first, so a checkpoint from a
different model fails with one clear error instead of deep inside orbax or XLA.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """`with Checkpointer(dir, keep=3) as ckpt: ckpt.save(step, state, data_state); ckpt.restore(...)`."""

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True)
        handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict | None = None, force: bool = False) -> bool:
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def restore(self, target: Any, step: int | None = None, with_data: bool = False) -> Any:
        """Restores onto `target` (arrays or ShapeDtypeStructs carrying shardings). Returns state[, data]."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No finalized checkpoint in {self.directory}.")
        self._check_compatible(step, target)
        abstract = jax.tree.map(_abstract, target)
        items = {"state": ocp.args.StandardRestore(abstract)}
        has_data = with_data and os.path.isdir(os.path.join(self.directory, str(step), "data"))
        if has_data:
            items["data"] = ocp.args.JsonRestore()
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        if with_data:
            return restored["state"], (restored["data"] if has_data else None)
        return restored["state"]

    def _check_compatible(self, step: int, target: Any) -> None:
        metadata = self._manager.item_metadata(step)
        saved = metadata["state"] if metadata is not None and "state" in metadata else None
        if saved is None:
            return
        saved_leaves = jax.tree_util.tree_leaves_with_path(saved)
        target_leaves = jax.tree_util.tree_leaves_with_path(target)
        saved_by_path = {_path_key(p): leaf for p, leaf in saved_leaves}
        for path, leaf in target_leaves:
            key = _path_key(path)
            if key not in saved_by_path:
                raise ValueError(
                    f"Checkpoint {self.directory} step {step} has no entry {key}; it was written by a different "
                    "model or config. Point --workdir at a fresh directory or restore the matching config.")
            saved_shape = tuple(getattr(saved_by_path[key], "shape", ()) or ())
            expected_shape = tuple(np.shape(leaf))
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):   # stored as its raw key data
                expected_shape = jax.eval_shape(jax.random.key_data, leaf).shape
            if saved_shape != expected_shape:
                raise ValueError(
                    f"Checkpoint {self.directory} step {step}: {key} has shape {saved_shape} but the model "
                    f"expects {expected_shape}; the checkpoint belongs to a different config. Use a "
                    "fresh --workdir or the config it was trained with.")
        if len(saved_by_path) != len(target_leaves):
            raise ValueError(
                f"Checkpoint {self.directory} step {step} holds {len(saved_by_path)} arrays but the model has "
                f"{len(target_leaves)}; it belongs to a different config. Use a fresh --workdir.")

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _path_key(path: tuple) -> str:
    """A tree path as "a/b/0", the same whether it came from the live tree or orbax metadata."""
    parts = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
    return "/".join(str(p) for p in parts)


def _abstract(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)


def fresh_run_dir(workdir: str) -> str:
    """A new timestamped directory below workdir, for jobs that must not resume from an earlier run's checkpoints."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in [""] + [f"-{i}" for i in range(1, 1000)]:
        path = os.path.join(workdir, stamp + suffix)
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"Could not make a fresh run directory under {workdir}.")
