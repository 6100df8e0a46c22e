"""A training workdir's bookkeeping besides checkpoints: the identity it pins on its first run (parameter and
batch shapes, data identity; a later run with another one is refused before anything is written), the accepted
config, and metrics rows past a resumed step."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from core import errors
from core.fileio import write_text_atomic


def run_identity(state: Any, batch: Any, extra: Mapping[str, Any] | None) -> dict:
    """What a workdir's checkpoints and metrics mean (`state`: a core.train TrainState): parameter shapes, global
    batch shapes, data identity."""
    describe = lambda tree: {jax.tree_util.keystr(path, simple=True, separator="/"):
                             [list(np.shape(leaf)), str(leaf.dtype)]
                             for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
    return {"params": describe(state.params), "batch": describe(batch),
            "data": json.loads(json.dumps(dict(extra or {}), default=str))}


def pin_identity(workdir: str, identity: dict) -> None:
    """Writes workdir/identity.json on the first run; later runs must match it (raises before any write)."""
    path = os.path.join(workdir, "identity.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            try:
                pinned = json.load(f)
            except json.JSONDecodeError as e:
                raise errors.WorkdirMismatchError(
                    f"{path} is unreadable ({e}); it pins what this workdir trained on. Use a fresh --workdir.")
        changed = differences(pinned, identity)
        if changed:
            raise errors.WorkdirMismatchError(
                f"--workdir {workdir} was trained with a different config (data or model identity: "
                + "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
                + f"). Resuming would mix two experiments: use a fresh --workdir, or rerun with the config in "
                f"{os.path.join(workdir, 'config.json')}.")
        return
    if jax.process_index() == 0:
        write_text_atomic(path, json.dumps(identity, indent=1, sort_keys=True))


def differences(pinned: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable "key: workdir X, this run Y" lines for every leaf that differs."""
    out = []
    for key in sorted(set(pinned) | set(current)):
        a, b = pinned.get(key, "absent"), current.get(key, "absent")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: workdir {a}, this run {b}")
    return out


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """config.json, the record of the latest accepted run (written only after the workdir accepted it)."""
    if jax.process_index() == 0:
        write_text_atomic(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))


def drop_rows_after(workdir: str, step: int) -> None:
    """Removes metrics.jsonl rows past the resumed step: those steps run again and will be logged again."""
    path = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() != 0 or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue                  # a row cut short by a kill
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))
