"""Reliability of the train loop in-process (fast): damaged checkpoints fall back, a workdir refuses another
identity before writing, SIGINT saves then stops, replayed steps are logged once, a corpus is never replaced."""

import errno
import json
import logging
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from core import checkpoint as checkpoint_lib
from core import errors
from core import sharding as sharding_lib
from core import train as train_lib


class TinyMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, width: int = 8):
        self.dense1 = nnx.Linear(4, width, rngs=rngs)
        self.dense2 = nnx.Linear(width, 1, rngs=rngs)

    def __call__(self, x):
        return self.dense2(jnp.tanh(self.dense1(x)))


def loss_fn(model, batch, rng):
    del rng
    return jnp.mean((model(batch["x"])[:, 0] - batch["y"]) ** 2), {}


def batch_at(step: int, batch_size: int = 8):
    x = np.random.default_rng(step).normal(size=(batch_size, 4)).astype(np.float32)
    return {"x": x, "y": np.sin(x.sum(-1)).astype(np.float32)}


class Batches:
    """An iterator whose position is checkpointed (like grain's), so every checkpoint has a `data` item."""

    def __init__(self, batch_size: int = 8):
        self.position, self.batch_size = 0, batch_size

    def __iter__(self):
        return self

    def __next__(self):
        self.position += 1
        return batch_at(self.position - 1, self.batch_size)

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = state["position"]


def make_config(num_steps=6):
    return ml_collections.ConfigDict(dict(
        train=train_lib.train_config(num_steps=num_steps, log_every=1, eval_every=1000, checkpoint_every=2,
                                     compute_dtype="float32", async_checkpoint=False, keep_checkpoints=3),
        optim=train_lib.optim_config(learning_rate=1e-2, warmup_steps=2, total_steps=6),
        mesh=sharding_lib.mesh_config(data=-1)))


def run(workdir, num_steps=6, batch_size=8, identity=None, hooks=()):
    return train_lib.train(make_config(num_steps), str(workdir), TinyMLP(nnx.Rngs(0)), loss_fn,
                           Batches(batch_size), hooks=hooks, identity=identity)


def losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), f"duplicate metrics rows: {steps}"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference") / "run"
    result = run(workdir)
    return workdir, losses(workdir), result.state.params


@pytest.fixture(scope="module")
def at_step_4(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("partial") / "run"
    run(workdir, num_steps=4)
    return workdir


# One of each kind of file orbax writes for a step (the array data is the largest file under ocdbt.process_0).
DAMAGE = ["_CHECKPOINT_METADATA", "data/metadata", "state/_METADATA", "state/manifest.ocdbt",
          "state/ocdbt.process_0/manifest.ocdbt", "state/ocdbt.process_0/d/LARGEST", "state/d/ANY"]


def _damage(step_dir, kind):
    if kind.endswith(("LARGEST", "ANY")):
        folder = os.path.join(step_dir, os.path.dirname(kind))
        files = sorted(os.listdir(folder), key=lambda n: os.path.getsize(os.path.join(folder, n)))
        path = os.path.join(folder, files[-1])
    else:
        path = os.path.join(step_dir, kind)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.parametrize("kind", DAMAGE)
def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, at_step_4, kind, capfd):
    workdir = tmp_path / "run"
    shutil.copytree(at_step_4, workdir)
    _damage(workdir / "checkpoints" / "4", kind)
    result = run(workdir)
    err = capfd.readouterr().err
    want_dir, want_losses, want_params = reference
    got = losses(workdir)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in got:   # the resumed curve equals the uninterrupted one, whichever checkpoint it came from
        np.testing.assert_allclose(got[step], want_losses[step], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    if "unreadable" in err:   # detected: the warning names the step and the damaged one was kept aside
        assert "checkpoint step 4" in err and "restored step 2" in err
        assert os.listdir(str(workdir / "checkpoints") + ".corrupt")


def test_a_failed_restore_keeps_asyncios_shutdown_tracebacks_off_stderr(caplog):
    # The shape of a damaged-step restore inside orbax: one read fails, gather raises, asyncio.run cancels the
    # sibling read, which wraps its CancelledError in a new exception; asyncio then logs that one at ERROR with
    # a traceback (what made the CLI's truncated-checkpoint test flaky). Deterministic here.
    import asyncio

    async def fails():
        raise ValueError("damaged read")

    async def wraps_its_cancellation():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError as e:
            raise Exception("error while reading array index") from e

    async def restore():
        await asyncio.gather(fails(), wraps_its_cancellation())

    caplog.set_level("DEBUG")
    with pytest.raises(ValueError, match="damaged read"):
        asyncio.run(restore())
    assert any(r.name == "asyncio" and r.levelname == "ERROR" for r in caplog.records)   # the noise exists
    caplog.clear()
    with pytest.raises(ValueError, match="damaged read"), checkpoint_lib._quiet_asyncio_errors():
        asyncio.run(restore())
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= 40]
    assert not logging.getLogger("asyncio").filters   # the filter goes with the restore


def test_every_checkpoint_damaged_is_one_error_naming_each_step(tmp_path, at_step_4):
    workdir = tmp_path / "run"
    shutil.copytree(at_step_4, workdir)
    for step in ("2", "4"):
        _damage(workdir / "checkpoints" / step, "state/manifest.ocdbt")
    with pytest.raises(errors.CheckpointError) as info:
        run(workdir)
    message = str(info.value)
    assert "step 4:" in message and "step 2:" in message and "\n" not in message
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]   # nothing moved or deleted


def test_workdir_refuses_another_identity_before_writing_anything(tmp_path):
    workdir = tmp_path / "run"
    run(workdir, num_steps=2, identity={"tokenizer_sha256": "aaa", "vocab_size": 2048})
    before = {name: open(workdir / name, "rb").read() for name in ("config.json", "metrics.jsonl", "identity.json")}
    listing = sorted(os.listdir(workdir))
    for kwargs, named in ((dict(batch_size=16), "batch/x"), (dict(identity={"tokenizer_sha256": "bbb",
                                                                            "vocab_size": 2048}), "tokenizer")):
        with pytest.raises(errors.WorkdirMismatchError, match=named.replace("/", ".")):
            run(workdir, num_steps=4, **{"identity": {"tokenizer_sha256": "aaa", "vocab_size": 2048}, **kwargs})
    assert sorted(os.listdir(workdir)) == listing
    assert {name: open(workdir / name, "rb").read() for name in before} == before
    run(workdir, num_steps=4, identity={"tokenizer_sha256": "aaa", "vocab_size": 2048})   # same identity resumes
    assert sorted(losses(workdir)) == [1, 2, 3, 4]


def test_sigint_saves_a_checkpoint_then_stops_and_resume_matches(tmp_path, reference):
    workdir = tmp_path / "run"
    # what the trainer must restore: Python's default handler, or SIG_IGN when the test process was started
    # with SIGINT ignored (a background job)
    before = signal.getsignal(signal.SIGINT)

    def interrupt_at_3(step, state, metrics):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(errors.Interrupted, match="SIGINT at step 3"):
        run(workdir, hooks=(interrupt_at_3,))
    with checkpoint_lib.Checkpointer(str(workdir / "checkpoints")) as ckpt:
        assert ckpt.all_steps() == [2, 3]
    assert signal.getsignal(signal.SIGINT) is before   # handler restored
    run(workdir)
    got, want = losses(workdir), reference[1]
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in got:
        np.testing.assert_allclose(got[step], want[step], rtol=1e-6)


def test_steps_replayed_after_a_crash_are_logged_once(tmp_path, reference):
    workdir = tmp_path / "run"

    class Crash(Exception):
        pass

    def crash_at_5(step, state, metrics):
        if step == 5:
            raise Crash   # after steps 3, 4 were logged; the last checkpoint is 4, then 5 is replayed

    with pytest.raises(Crash):
        run(workdir, hooks=(crash_at_5,))
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.')   # a row cut short by kill -9
    run(workdir)
    assert sorted(losses(workdir)) == [1, 2, 3, 4, 5, 6]


def test_environment_faults_are_user_errors_and_bugs_are_not():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/checkpoints/4")
    assert "No space left on device (/w/checkpoints/4)" in str(errors.environment_fault(full))
    wrapped = ValueError("tensorstore: Error writing file: [Errno 30] Read-only file system")
    assert isinstance(errors.environment_fault(wrapped), errors.UserError)
    assert errors.environment_fault(FileNotFoundError(errno.ENOENT, "x")) is None
    assert errors.environment_fault(ValueError("shapes (3,) and (4,) not aligned")) is None
    assert not issubclass(ValueError, errors.UserError) and issubclass(errors.ConfigError, ValueError)


def test_a_corpus_is_never_replaced_by_another_config(tmp_path):
    from core.data import corpus
    config = corpus.corpus_config(packages=["ml_collections"], include_stdlib=False, max_files=40,
                                  validation_percent=20, vocab_size=300, min_frequency=1)
    out = str(tmp_path / "corpus")
    manifest = corpus.build_corpus(config, out)
    assert corpus.ensure_corpus(config, out) == manifest   # same config: reused
    other = corpus.corpus_config(**{**config.to_dict(), "vocab_size": 400})
    with pytest.raises(errors.CorpusMismatchError, match=r"vocab_size: built 300, wanted 400") as info:
        corpus.ensure_corpus(other, out)
    assert "--config.data.corpus_dir" in str(info.value)
    assert corpus.load_manifest(out) == manifest
    assert not [n for n in os.listdir(tmp_path) if n != "corpus"]   # no temp dirs left behind
