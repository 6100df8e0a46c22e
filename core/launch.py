"""Shared plumbing for `launch/` absl mains: --config path.py:arg, --workdir, overrides, multi-process.

    python -m launch.train_lm --config configs/lm/lm.py:smoke --workdir runs/x --config.train.num_steps=50

Overrides use ml_collections' `--config.a.b=value` (unknown keys and wrong types are refused by it).
For several processes, pass --coordinator_address host:port --num_processes N --process_id i; on CPU the
cross-process collectives go through gloo.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file path.py[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and artifacts.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Number of JAX processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Fake CPU devices for this process (0: leave as is).")


def _initialise_jax() -> None:
    import jax  # imported here so XLA/env settings made above take effect first

    if _CPU_DEVICES.value:
        jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
    if _COORDINATOR.value:
        if os.environ.get("JAX_PLATFORMS", "") == "cpu" or not _has_accelerator():
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                                   num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
    logging.info("process %d/%d, %d local devices, %d global devices (%s)", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)


def _has_accelerator() -> bool:
    try:
        import jax
        return any(d.platform != "cpu" for d in jax.devices())
    except RuntimeError:
        return False


def run(main: Callable) -> None:
    """`run(main)` with `main(config, workdir)`; validates flags and writes config.json to the workdir."""
    flags.mark_flags_as_required(["config", "workdir"])

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments {argv[1:]}; overrides look like --config.a.b=value.")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        _initialise_jax()
        import jax
        config, workdir = _CONFIG.value, _WORKDIR.value
        os.makedirs(workdir, exist_ok=True)
        if jax.process_index() == 0:
            tmp = os.path.join(workdir, "config.json.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(config.to_json_best_effort(indent=2))
            os.replace(tmp, os.path.join(workdir, "config.json"))
        logging.info("config:\n%s", config)
        try:
            main(config, workdir)
        except USER_ERRORS as e:   # a user's mistake gets one line, not a traceback
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    app.run(_main, flags_parser=_parse_flags)


USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with bad --config overrides reported in one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error:
        raise
    except (AttributeError, KeyError, TypeError, ValueError, FileNotFoundError) as e:
        message = str(e).strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
        print(f"error: bad --config or override: {message}", file=sys.stderr)
        sys.exit(2)
