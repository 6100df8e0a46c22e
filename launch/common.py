"""Shared plumbing for `launch/` absl mains: --config path.py:arg, --workdir, overrides, multi-process.

    .venv/bin/python -m launch.train_lm --config configs/lm/smoke.py --workdir runs/x --config.train.num_steps=50

Overrides use ml_collections' `--config.a.b=value` (unknown keys and wrong types are refused by it).
`--cpu_devices=N` splits the CPU into N fake devices (for a mesh such as --config.mesh.fsdp=8 on CPU).
For several processes start each one with --coordinator_address host:port --num_processes N --process_id i
(0..N-1); they wait --distributed_timeout seconds for each other, then stop with one error line. On CPU the
cross-process collectives go through gloo.

The user-error boundary: a `core.errors.UserError` (and a disk-full / read-only / permission OSError) is printed
as one `error: ...` line with exit code 1 (130 after an interrupt); bad flags exit with 2; anything else is a
bug and keeps its traceback. Logging defaults to warnings (pass --verbosity=0 for INFO).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from core import errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file path.py[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and artifacts.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Number of JAX processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index, 0..num_processes-1.")
_TIMEOUT = flags.DEFINE_integer("distributed_timeout", 300, "Seconds the processes wait for each other to join.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Fake CPU devices for this process (0: leave as is).")

FLAG_ERROR_EXIT = 2


def fail(message: str, exit_code: int = 1) -> None:
    """Prints one `error: ...` line to stderr and exits."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(exit_code)


def _initialise_jax() -> None:
    """Sets up devices and joins the other processes. No JAX backend may start before
    jax.distributed.initialize, so nothing here asks for devices until it has run."""
    import jax  # imported here so XLA/env settings made above take effect first

    num, index = _NUM_PROCESSES.value, _PROCESS_ID.value
    if num < 1 or not 0 <= index < num:
        raise errors.ConfigError(f"--process_id={index} must be in 0..{num - 1} for --num_processes={num}.")
    if num > 1 and not _COORDINATOR.value:
        raise errors.ConfigError(f"--num_processes={num} needs --coordinator_address host:port (process 0's).")
    if _CPU_DEVICES.value:
        jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
    if _COORDINATOR.value:
        # gloo carries cross-process collectives between CPU devices; GPU/TPU backends ignore this setting.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        if num > 1:
            _rendezvous(_COORDINATOR.value, num, index, _TIMEOUT.value)
        try:
            jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=num,
                                       process_id=index, initialization_timeout=_TIMEOUT.value)
        except Exception as e:  # XlaRuntimeError: DEADLINE_EXCEEDED / UNAVAILABLE, one paragraph of gRPC text
            raise errors.DistributedError(
                f"process {index} of {num} could not meet the others at {_COORDINATOR.value} within "
                f"{_TIMEOUT.value} s ({type(e).__name__}: {_first_line(e)}). Start all {num} processes with the "
                f"same --coordinator_address and --num_processes and --process_id 0..{num - 1} (process 0 "
                "hosts the coordinator), or raise --distributed_timeout.") from e
    if jax.process_count() > 1:
        print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local devices, "
              f"{jax.device_count()} global devices ({jax.devices()[0].platform})", flush=True)


def _rendezvous(address: str, num: int, index: int, timeout: float) -> None:
    """Waits until all `num` processes are up, over a plain TCP socket on the coordinator's port, then frees
    the port for JAX. jax.distributed.initialize aborts the whole process (a C++ check failure, no Python
    exception) when a peer is missing at its deadline; this turns that case into one clear error line."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise errors.ConfigError(f"--coordinator_address={address!r} must look like host:port.")
    deadline = time.monotonic() + timeout
    how = (f"start all {num} processes with --coordinator_address {address} --num_processes {num} and "
           f"--process_id 0..{num - 1} within --distributed_timeout={timeout:g} s of each other")
    if index == 0:
        peers = {}
        try:
            server = socket.create_server(("", int(port)), family=socket.AF_INET6, dualstack_ipv6=True)
        except OSError:
            server = socket.create_server(("", int(port)))
        with server:
            while len(peers) < num - 1 and time.monotonic() < deadline:
                server.settimeout(max(deadline - time.monotonic(), 0.01))
                try:
                    connection, _ = server.accept()
                    connection.settimeout(5)
                    peer = int(connection.recv(16).decode().strip() or -1)
                except (socket.timeout, ValueError, OSError):
                    continue
                peers.setdefault(peer, connection)
            missing = sorted(set(range(1, num)) - set(peers))
            for connection in peers.values():
                with connection:
                    if not missing:
                        connection.sendall(b"go\n")
        if missing:
            raise errors.DistributedError(
                f"process 0 waited {timeout:g} s at {address} but process(es) {missing} never connected: {how}.")
        return
    while True:
        try:
            connection = socket.create_connection((host, int(port)), timeout=max(deadline - time.monotonic(), 0.01))
            break
        except OSError:
            if time.monotonic() >= deadline:
                raise errors.DistributedError(
                    f"process {index} could not reach process 0 at {address} within {timeout:g} s: {how}.")
            time.sleep(0.2)
    with connection:
        connection.sendall(f"{index}\n".encode())
        connection.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            reply = connection.recv(16)
        except OSError:
            reply = b""
    if reply.strip() != b"go":
        raise errors.DistributedError(
            f"process {index} reached {address}, but not every process joined within {timeout:g} s: {how}.")


def _first_line(error: BaseException, limit: int = 240) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _load_config():
    """The --config ConfigDict with overrides applied; ml_collections loads it lazily, so errors surface here."""
    if _CONFIG.value is None:   # pragma: no cover - guarded by _parse_flags
        fail("--config is required, e.g. --config configs/lm/smoke.py.", FLAG_ERROR_EXIT)
    return _CONFIG.value


def run(main: Callable) -> None:
    """`run(main)` with `main(config, workdir)`. config.json is written by core.train once the workdir has
    accepted the config (so a refused config never replaces the record)."""
    def _main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; overrides look like --config.a.b=value.", FLAG_ERROR_EXIT)
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)   # orbax/TFDS INFO lines are noise for a user
            # orbax also logs its background-thread failures with a traceback; the same failure reaches the
            # main thread as an exception and is reported once at the boundary below.
            logging.get_absl_handler().addFilter(_drop_orbax_records)
        try:
            config, workdir = _load_config(), _WORKDIR.value
            _initialise_jax()
            logging.info("config:\n%s", config)
            main(config, workdir)
        except errors.UserError as e:   # a user's mistake or the machine's refusal: one line, no traceback
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:   # outside the train loop, or a second Ctrl-C (the first saves and stops)
            fail("interrupted without a final save; rerun the same command to resume from the last checkpoint.",
                 errors.Interrupted.exit_code)
        except Exception as e:
            fault = errors.environment_fault(e)
            if fault is None:
                raise                     # a bug: keep the traceback
            fail(str(fault), fault.exit_code)

    app.run(_main, flags_parser=_parse_flags)


def _drop_orbax_records(record) -> bool:
    return f"{os.sep}orbax{os.sep}" not in record.pathname


def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with every flag or --config problem reported in one line (exit code 2)."""
    try:
        rest = flags.FLAGS(argv)
    except _CONFIG_ERRORS as e:
        fail(f"bad flag or override: {_flag_message(e)} (see --helpshort).", FLAG_ERROR_EXIT)
    if not _WORKDIR.value:
        fail("--workdir is required: the directory for checkpoints, metrics and config.json.", FLAG_ERROR_EXIT)
    if not flags.FLAGS["config"].present:
        fail("--config is required, e.g. --config configs/lm/smoke.py.", FLAG_ERROR_EXIT)
    path = config_flags.get_config_filename(flags.FLAGS["config"]).split(":")[0]
    if not os.path.isfile(path):
        fail(f"config file {path!r} not found (run from the repository root; configs live in configs/<paper>/).",
             FLAG_ERROR_EXIT)
    try:
        _CONFIG.value   # noqa: B018  (loads the file and applies the overrides now, not mid-run)
    except _CONFIG_ERRORS as e:
        fail(f"bad --config or override: {_flag_message(e)}", FLAG_ERROR_EXIT)
    return rest


# What absl and ml_collections raise for a bad flag, a bad override or a get_config(arg) that refuses its arg.
_CONFIG_ERRORS = (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError)


def _flag_message(error: BaseException) -> str:
    """One line from absl/ml_collections errors, which may embed a traceback or escaped newlines."""
    text = str(error).replace("\\n", "\n").replace("\\'", "'").strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":   # KeyError/AttributeError quote their text
        text = text[1:-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        lines = lines[-1:]              # the original exception: "ValueError: Unknown config argument ..."
    return _first_line(" ".join(lines))
