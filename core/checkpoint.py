"""Checkpoints: the only module that imports orbax.

Async save, keep-N, resume from the workdir. Atomicity comes from orbax: a step is written under a temporary
name and renamed when finalized, and `latest_step` only sees finalized steps, so an interrupted save is never
loaded. Restores are checked against the expected tree (shapes and dtypes) first, so a checkpoint from a
different model fails with one clear error instead of deep inside orbax or XLA. A finalized step that cannot be
read (truncated or damaged files) is skipped with a warning naming it and why, and the newest intact one is
restored; `restore_latest(..., quarantine=True)` also moves the damaged steps to `<dir>.corrupt/` so training
can save those step numbers again (nothing is deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from core import errors


class Checkpointer:
    """`with Checkpointer(dir, keep=3) as ckpt: ckpt.save(step, state, data_state); ckpt.restore(...)`."""

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True)
        handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        self.skipped: list[tuple[int, str]] = []   # (step, reason) of damaged steps the last restore passed over

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
        """Restores onto `target` (arrays or ShapeDtypeStructs carrying shardings). Returns state[, data].
        Without `step`, the newest intact checkpoint (see `restore_latest`)."""
        if step is None:
            _, state, data = self.restore_latest(target, with_data=True)
            return (state, data) if with_data else state
        state, data = self._restore_step(step, target, with_data)
        return (state, data) if with_data else state

    def restore_latest(self, target: Any, with_data: bool = False, quarantine: bool = False
                       ) -> tuple[int, Any, Any]:
        """(step, state, data or None) of the newest checkpoint that restores; damaged newer steps are skipped
        with a warning on stderr (and with `quarantine`, moved to `<dir>.corrupt/`). A checkpoint of another
        model is not damage: its WorkdirMismatchError propagates. Raises CheckpointError if none restores."""
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise errors.CheckpointError(f"No finalized checkpoint in {self.directory}.")
        skipped = []
        for step in steps:
            try:
                state, data = self._restore_step(step, target, with_data)
            except errors.UserError:
                raise
            except Exception as e:  # orbax/tensorstore/json: any unreadable file makes the step unusable
                reason = f"{type(e).__name__}: {_one_line(e)}"
                skipped.append((step, reason))
                print(f"warning: checkpoint step {step} in {self.directory} is unreadable ({reason}); "
                      "trying the previous one", file=sys.stderr, flush=True)
                continue
            if skipped and quarantine:
                self._quarantine([s for s, _ in skipped])
            if skipped:
                print(f"warning: restored step {step}; skipped damaged step(s) "
                      f"{', '.join(str(s) for s, _ in skipped)}"
                      + (f" (moved to {self.directory}.corrupt/)" if quarantine else ""), file=sys.stderr, flush=True)
            self.skipped = skipped
            return step, state, data
        listing = "; ".join(f"step {s}: {r}" for s, r in skipped)
        raise errors.CheckpointError(
            f"No checkpoint in {self.directory} can be restored ({listing}). Move the directory aside to start "
            "over, or restore it from a backup.")

    def _restore_step(self, step: int, target: Any, with_data: bool) -> tuple[Any, Any]:
        if step not in self.all_steps():
            raise errors.CheckpointError(f"No finalized checkpoint for step {step} in {self.directory}; it has "
                                         f"{sorted(self.all_steps())}.")
        self._check_compatible(step, target)
        abstract = jax.tree.map(_abstract, target)
        items = {"state": ocp.args.StandardRestore(abstract)}
        has_data = with_data and os.path.isdir(os.path.join(self.directory, str(step), "data"))
        if has_data:
            items["data"] = ocp.args.JsonRestore()
        with _quiet_asyncio_errors():
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], (restored["data"] if has_data else None)

    def _quarantine(self, steps: list[int]) -> None:
        """Moves damaged steps out of orbax's sight (process 0; every process then rereads the directory)."""
        if jax.process_index() == 0:
            aside = f"{self.directory}.corrupt"
            os.makedirs(aside, exist_ok=True)
            for step in steps:
                target = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
                shutil.move(os.path.join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("checkpoint_quarantine")
        self._manager.reload()

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
                raise errors.WorkdirMismatchError(
                    f"Checkpoint {self.directory} step {step} has no entry {key}; it was written by a different "
                    "model or config. Point --workdir at a fresh directory or restore the matching config.")
            saved_shape = tuple(getattr(saved_by_path[key], "shape", ()) or ())
            expected_shape = tuple(np.shape(leaf))
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):   # stored as its raw key data
                expected_shape = jax.eval_shape(jax.random.key_data, leaf).shape
            if saved_shape != expected_shape:
                raise errors.WorkdirMismatchError(
                    f"Checkpoint {self.directory} step {step}: {key} has shape {saved_shape} but the model "
                    f"expects {expected_shape}; the checkpoint belongs to a different config. Use a "
                    "fresh --workdir or the config it was trained with.")
        if len(saved_by_path) != len(target_leaves):
            raise errors.WorkdirMismatchError(
                f"Checkpoint {self.directory} step {step} holds {len(saved_by_path)} arrays but the model has "
                f"{len(target_leaves)}; it belongs to a different config. Use a fresh --workdir.")

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


class _DropErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def _quiet_asyncio_errors():
    """Keeps asyncio's own error logs of a failed restore off stderr; the restore's exception still propagates.

    When one read of a damaged step fails, orbax's `asyncio.gather` raises while sibling reads are pending;
    `asyncio.run` then cancels them, orbax wraps each CancelledError in a new Exception, and asyncio logs every
    one with a full traceback ("unhandled exception during asyncio.run() shutdown", or "Task exception was
    never retrieved" when the task is collected). Which of these appear depends on thread timing. The caller
    reports the failure in one line, so the duplicate tracebacks are dropped; tasks that die with the restore
    are collected before the filter is removed."""
    asyncio_logger = logging.getLogger(asyncio.__name__)
    drop = _DropErrors()
    asyncio_logger.addFilter(drop)
    try:
        yield
    except BaseException:
        gc.collect()     # only a failed restore leaves dead tasks; an intact one skips the collection
        raise
    finally:
        asyncio_logger.removeFilter(drop)


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "..."


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
