"""Metrics: JSONL + tensorboard event files + a progress line (step, loss, steps/s, ETA). Process 0 writes."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

from core.fileio import write_text_atomic


def _scalar(value: Any) -> float:
    return float(np.asarray(value))


class MetricsWriter:
    """Appends `{"step": s, **scalars}` lines to metrics.jsonl and the same scalars to tensorboard."""

    def __init__(self, workdir: str, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.workdir = workdir
        self._jsonl = None
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
            from tensorboardX import SummaryWriter  # imported lazily: only the writing process needs it
            self._tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, scalars: Mapping[str, Any], prefix: str = "") -> None:
        if not self.enabled:
            return
        values = {f"{prefix}{k}": _scalar(v) for k, v in scalars.items() if np.ndim(v) == 0}
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        self._jsonl.flush()
        for key, value in values.items():
            self._tb.add_scalar(key, value, int(step))

    def write_text(self, step: int, tag: str, text: str) -> None:
        if self.enabled:
            self._tb.add_text(tag, text, int(step))

    def flush(self) -> None:
        if self.enabled:
            self._jsonl.flush()
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
            self.enabled = False


def read_json(path: str, default: Any = None) -> Any:
    """A JSON file's content, or `default` when the file does not exist (an optional result not made yet)."""
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Progress:
    """Formats "step 120/1000 loss 3.21 | 14.2 steps/s | ETA 1m02s" from wall time between reports."""

    def __init__(self, total_steps: int, start_step: int = 0):
        self.total_steps = total_steps
        self._last_step = start_step
        self._last_time = time.perf_counter()
        self.steps_per_s = float("nan")

    def update(self, step: int) -> float:
        now = time.perf_counter()
        if step > self._last_step:
            self.steps_per_s = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        return self.steps_per_s

    def line(self, step: int, scalars: Mapping[str, Any]) -> str:
        """The progress line at the rate of the last `update`."""
        rate = self.steps_per_s
        remaining = (self.total_steps - step) / rate if rate == rate and rate > 0 else float("nan")
        shown = " ".join(f"{k} {_scalar(v):.4g}" for k, v in scalars.items() if np.ndim(v) == 0)
        return f"step {step}/{self.total_steps} {shown} | {rate:.2f} steps/s | ETA {_fmt_seconds(remaining)}"


def _fmt_seconds(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def log_progress(line: str) -> None:
    if jax.process_index() == 0:
        logging.info(line)
        print(line, flush=True)


def _jsonable(value: Any) -> Any:
    """Numbers (numpy / jax scalars included) as floats, anything else as its string."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def write_json(path: str, payload: dict) -> None:
    """Writes JSON atomically (temp file + rename): a reader never sees a half-written file."""
    write_text_atomic(path, json.dumps(payload, indent=1, default=_jsonable))
