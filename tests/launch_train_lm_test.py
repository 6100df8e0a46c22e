"""launch/train_lm.py end to end on the smoke config: single process, resume, and two processes on one mesh,
all started as the README says (no JAX_PLATFORMS; the launch code must not touch a backend before
jax.distributed.initialize)."""

import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    for key in ("JAX_PLATFORMS", "XLA_FLAGS"):   # a user's shell has neither
        env.pop(key, None)
    return env


def _train_cmd(workdir, corpus_dir, *extra):
    return [sys.executable, "-m", "launch.train_lm", "--config", "configs/lm/smoke.py", "--workdir", str(workdir),
            f"--config.data.corpus_dir={corpus_dir}", "--config.train.num_steps=20",
            "--config.optim.total_steps=20", "--config.train.eval_every=20", "--config.train.log_every=5",
            "--config.train.checkpoint_every=10", *extra]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("corpus") / "smoke")


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_train_lm_runs_end_to_end_and_resumes(tmp_path, corpus_dir):
    workdir = tmp_path / "run"
    done = subprocess.run(_train_cmd(workdir, corpus_dir, "--cpu_devices=2"), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(workdir)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    evals = [r for r in rows if "eval/perplexity" in r]
    assert evals and evals[-1]["eval/perplexity"] > 1.0
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert any(name.startswith("events") for name in os.listdir(os.path.join(workdir, "tb")))
    # Run again with more steps: it resumes from step 20 instead of starting over.
    again = subprocess.run(_train_cmd(workdir, corpus_dir, "--cpu_devices=2", "--config.train.num_steps=30",
                                      "--config.optim.total_steps=20"),
                           cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stdout and "at step 20" in again.stdout
    assert max(r["step"] for r in _rows(workdir)) == 30


def test_unknown_config_key_is_one_clear_error(tmp_path, corpus_dir):
    done = subprocess.run(_train_cmd(tmp_path / "bad", corpus_dir, "--config.train.num_stepz=3"), cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "num_stepz" in done.stderr and "Traceback" not in done.stderr
    assert not os.path.exists(tmp_path / "bad" / "checkpoints")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_train_on_one_global_mesh(tmp_path, corpus_dir):
    # Build the corpus first so both processes only read it.
    warm = subprocess.run(_train_cmd(tmp_path / "warm", corpus_dir, "--config.train.num_steps=1",
                                     "--cpu_devices=1"),
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert warm.returncode == 0, warm.stderr[-3000:]
    port = _free_port()
    workdir = tmp_path / "mp"
    procs = [subprocess.Popen(
        _train_cmd(workdir, corpus_dir, "--cpu_devices=2", f"--coordinator_address=localhost:{port}",
                   "--num_processes=2", f"--process_id={i}", "--config.train.num_steps=10",
                   "--config.train.eval_every=10", "--config.train.checkpoint_every=10"),
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "process 0/2: 2 local devices, 4 global devices" in outputs[0][0]
    assert "process 1/2: 2 local devices, 4 global devices" in outputs[1][0]
    losses = [r["loss"] for r in _rows(workdir) if "loss" in r]
    assert len(losses) >= 2 and all(l == l for l in losses)


@pytest.mark.multiprocess
@pytest.mark.parametrize("process_id", [0, 1])
def test_a_peer_that_never_arrives_is_one_clear_timeout_error(tmp_path, process_id):
    port = _free_port()
    done = subprocess.run(
        [sys.executable, "-m", "launch.train_lm", "--config", "configs/lm/smoke.py", "--workdir",
         str(tmp_path / "run"), f"--coordinator_address=localhost:{port}", "--num_processes=2",
         f"--process_id={process_id}", "--distributed_timeout=3"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    (line,) = done.stderr.strip().splitlines()
    who = "process 0 waited 3 s" if process_id == 0 else "process 1 could not reach process 0"
    assert line.startswith("error: ") and who in line and "--process_id 0..1" in line
    assert not (tmp_path / "run").exists()
