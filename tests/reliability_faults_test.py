"""Fault injection on the launch scripts, run as the README says (subprocesses, no JAX_PLATFORMS): kill -9,
SIGINT, a full disk, a read-only workdir, a truncated checkpoint, user errors. Each test asserts what the user
sees (one `error:` line, the exit code) and that nothing was lost (the resumed loss curve equals the
uninterrupted one, earlier checkpoints intact)."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
# A tiny LM on a tiny corpus: the cost is import + compile, a few seconds per process on 2 cores.
TINY = ["--config.model.d_model=32", "--config.model.n_layers=1", "--config.model.n_heads=2",
        "--config.model.n_kv_heads=1", "--config.model.head_dim=16", "--config.model.mlp_dim=64",
        "--config.model.vocab_size=512", "--config.corpus.vocab_size=512", "--config.corpus.max_bytes=300000",
        "--config.corpus.validation_percent=20",
        "--config.data.seq_len=32", "--config.data.batch_size=8", "--config.eval.num_batches=1",
        "--config.sample.max_new_tokens=2", "--config.train.log_every=1", "--config.train.checkpoint_every=2",
        "--config.train.eval_every=1000", f"--config.optim.total_steps={STEPS}"]


def env() -> dict:
    out = dict(os.environ, PYTHONPATH=ROOT)
    for key in ("JAX_PLATFORMS", "XLA_FLAGS"):   # as a user's shell: no test-only device settings
        out.pop(key, None)
    return out


def command(workdir, corpus_dir, *extra, steps=STEPS):
    return [sys.executable, "-m", "launch.train_lm", "--config", "configs/lm/smoke.py", "--workdir", str(workdir),
            f"--config.data.corpus_dir={corpus_dir}", f"--config.train.num_steps={steps}", *TINY, *extra]


def train(workdir, corpus_dir, *extra, steps=STEPS, prefix=(), timeout=600):
    return subprocess.run([*prefix, *command(workdir, corpus_dir, *extra, steps=steps)], cwd=ROOT, env=env(), text=True,
                          capture_output=True, timeout=timeout)


def start(workdir, corpus_dir, *extra, steps=STEPS):
    return subprocess.Popen(command(workdir, corpus_dir, *extra, steps=steps), cwd=ROOT, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_line(proc, prefix):
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"never printed {prefix!r}: {proc.stderr.read()[-2000:]}")


def losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), f"duplicate rows {steps}"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def steps_saved(workdir):
    """Finalized checkpoint steps (orbax renames a step's temporary directory to the bare number when done)."""
    return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert "Traceback" not in stderr and len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: ")
    return lines[0]


def assert_same_curve(workdir, reference):
    got, want = losses(workdir), losses(reference)
    assert set(range(1, STEPS + 1)) <= set(got)
    for step in range(1, STEPS + 1):
        np.testing.assert_allclose(got[step], want[step], rtol=1e-5, err_msg=f"step {step}")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("corpus") / "tiny")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_dir):
    """The uninterrupted run (also builds the corpus)."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    done = train(workdir, corpus_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip() == "", done.stderr[-3000:]   # no log noise, no doubled progress lines
    assert done.stdout.count(f"step {STEPS}/{STEPS}") == 1
    assert "building the corpus" in done.stdout and "Downloading" not in done.stdout   # TFDS downloads nothing
    return workdir


@pytest.fixture(scope="module")
def at_step_4(tmp_path_factory, corpus_dir, reference):
    workdir = tmp_path_factory.mktemp("partial") / "run"
    done = train(workdir, corpus_dir, steps=4)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def test_kill_9_then_sigint_then_resume_gives_the_uninterrupted_curve(tmp_path, corpus_dir, reference):
    # The interrupted runs are given 1000 steps so that they are far from done when the signal lands; the
    # schedule is fixed by optim.total_steps, so steps 1..6 must equal the 6-step reference.
    workdir = tmp_path / "run"
    proc = start(workdir, corpus_dir, steps=1000)
    wait_for_line(proc, "step 3/")
    while not (workdir / "checkpoints").exists() or not steps_saved(workdir):   # saves are async: wait for one
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    proc = start(workdir, corpus_dir, steps=1000)   # resumes, and is interrupted while compiling its first step
    resumed = int(wait_for_line(proc, "resumed").split()[-1])
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    line = one_error_line(err)
    assert f"stopped by SIGINT at step {resumed + 1}/1000 after saving a checkpoint there" in line, line
    assert resumed + 1 in steps_saved(workdir)
    done = train(workdir, corpus_dir, steps=max(STEPS, resumed + 3))
    assert done.returncode == 0 and f"at step {resumed + 1}" in done.stdout, done.stderr[-3000:]
    assert_same_curve(workdir, reference)


@pytest.mark.slow
def test_kill_9_during_a_save_never_loads_the_partial_checkpoint(tmp_path, corpus_dir, reference):
    workdir = tmp_path / "run"
    proc = start(workdir, corpus_dir, "--config.train.async_checkpoint=true", steps=1000)
    checkpoints = workdir / "checkpoints"
    while proc.poll() is None:   # kill while orbax's temporary step directory exists
        if checkpoints.exists() and any("tmp" in n for n in os.listdir(checkpoints)):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    done = train(workdir, corpus_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_curve(workdir, reference)


def test_truncated_latest_checkpoint_falls_back_and_says_so(tmp_path, corpus_dir, reference, at_step_4):
    workdir = tmp_path / "run"
    shutil.copytree(at_step_4, workdir)
    step_dir = workdir / "checkpoints" / "4"
    files = [os.path.join(d, n) for d, _, names in os.walk(step_dir) for n in names]
    largest = max(files, key=os.path.getsize)   # the array data
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)
    done = train(workdir, corpus_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checkpoint step 4" in done.stderr and "restored step 2" in done.stderr
    assert "Traceback" not in done.stderr
    assert_same_curve(workdir, reference)
    assert os.listdir(str(workdir / "checkpoints") + ".corrupt")   # kept aside, not deleted


# A full disk, emulated per process: any write past 64 KiB fails with EFBIG (SIGXFSZ ignored). A shell sets
# the limit so the test process (multithreaded JAX) needs no preexec_fn.
FULL_DISK = ["bash", "-c", 'ulimit -f 64 && trap "" XFSZ && exec "$@"', "bash"]


def test_full_disk_is_one_line_and_keeps_earlier_checkpoints(tmp_path, corpus_dir, reference, at_step_4):
    workdir = tmp_path / "run"
    shutil.copytree(at_step_4, workdir)
    done = train(workdir, corpus_dir, prefix=FULL_DISK)
    assert done.returncode == 1
    assert "File too large" in one_error_line(done.stderr) and "rerun" in done.stderr
    assert steps_saved(workdir) == [2, 4]
    done = train(workdir, corpus_dir)   # space is back: the same command resumes and loses nothing
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_curve(workdir, reference)


def test_read_only_workdir_is_one_line_and_changes_nothing(tmp_path, corpus_dir, at_step_4):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode:
        pytest.skip("needs `unshare -rm` (user + mount namespaces) for a read-only bind mount")
    workdir = tmp_path / "run"
    shutil.copytree(at_step_4, workdir)
    before = {p: open(os.path.join(d, p), "rb").read() for d, _, names in os.walk(workdir) for p in names}
    read_only = ["unshare", "-rm", "sh", "-c",
                 f'mount --bind "{workdir}" "{workdir}" && mount -o remount,bind,ro "{workdir}" && exec "$@"', "sh"]
    done = train(workdir, corpus_dir, prefix=read_only)
    assert done.returncode == 1
    assert "Read-only file system" in one_error_line(done.stderr)
    after = {p: open(os.path.join(d, p), "rb").read() for d, _, names in os.walk(workdir) for p in names}
    assert after == before


@pytest.mark.parametrize("args, expected", [
    (["--config.train.num_steps=abc"], "invalid literal for int() with base 10: 'abc'"),
    (["--config", "configs/lm/nope.py"], "config file 'configs/lm/nope.py' not found"),
    (["--config", "configs/lm/smoke.py:bogus"], "Unknown config argument 'bogus'"),
    (["--workdir="], "--workdir is required"),
    (["--config.train.num_stepz=3"], 'Did you mean "num_steps"'),
])
def test_user_errors_are_one_line_and_write_nothing(tmp_path, args, expected):
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "launch.train_lm", "--config", "configs/lm/smoke.py", "--workdir", str(workdir),
           *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert expected in one_error_line(done.stderr)
    assert not workdir.exists()


def test_missing_corpus_sources_are_one_line(tmp_path):
    done = train(tmp_path / "run", tmp_path / "corpus", "--config.corpus.kernel_dir=/nonexistent/linux")
    assert done.returncode == 1
    assert "kernel_dir '/nonexistent/linux' does not exist" in one_error_line(done.stderr)
    assert not (tmp_path / "corpus").exists() and not (tmp_path / "run").exists()


def test_corpus_of_another_config_is_refused_and_kept(tmp_path, corpus_dir, reference):
    manifest = open(os.path.join(corpus_dir, "manifest.json")).read()
    done = train(tmp_path / "run", corpus_dir, "--config.corpus.vocab_size=600")
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "vocab_size: built 512, wanted 600" in line and "--config.data.corpus_dir" in line
    assert open(os.path.join(corpus_dir, "manifest.json")).read() == manifest
    assert not (tmp_path / "run").exists()


def test_changed_batch_geometry_is_refused_before_config_json_changes(tmp_path, corpus_dir, at_step_4):
    workdir = tmp_path / "run"
    shutil.copytree(at_step_4, workdir)
    config_json = open(workdir / "config.json").read()
    done = train(workdir, corpus_dir, "--config.data.seq_len=16")
    assert done.returncode == 1
    assert "batch.tokens: workdir [[8, 33]" in one_error_line(done.stderr)
    assert open(workdir / "config.json").read() == config_json
    assert steps_saved(workdir) == [2, 4]


def test_model_vocab_size_follows_the_tokenizer_loudly(tmp_path, corpus_dir, at_step_4):
    workdir = tmp_path / "run"
    shutil.copytree(at_step_4, workdir)
    done = train(workdir, corpus_dir, "--config.model.vocab_size=999")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "config.model.vocab_size=999 replaced by the tokenizer's 512" in done.stdout
    assert json.load(open(workdir / "config.json"))["model"]["vocab_size"] == 512
