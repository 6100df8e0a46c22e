"""The trainer: one compile, sharded == single device, resume == uninterrupted, clear errors."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from core import checkpoint as checkpoint_lib
from core import metrics as metrics_lib
from core import sharding as sharding_lib
from core import train as train_lib


class TinyMLP(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.w1 = nnx.Param(init(rngs.params(), (8, width)), out_sharding=("embed", "mlp"))
        self.w2 = nnx.Param(init(rngs.params(), (width, 1)), out_sharding=("mlp", None))
        self.norm = nnx.BatchNorm(width, use_running_average=False, rngs=rngs)

    def __call__(self, x):
        return jnp.tanh(self.norm(x @ self.w1)) @ self.w2


def regression_loss(model, batch, rng):
    del rng
    pred = model(batch["x"])[:, 0]
    loss = jnp.mean((pred - batch["y"]) ** 2)
    return loss, {"pred_std": jnp.std(pred)}


def batch_at(step: int, batch_size: int = 16):
    rng = np.random.default_rng(step)
    x = rng.normal(size=(batch_size, 8)).astype(np.float32)
    return {"x": x, "y": np.sin(x.sum(-1)).astype(np.float32)}


def make_config(num_steps=6, mesh=None, lr=1e-2, width=16):
    return ml_collections.ConfigDict(dict(
        train=train_lib.train_config(num_steps=num_steps, log_every=1, eval_every=1000, checkpoint_every=3,
                                     compute_dtype="float32", async_checkpoint=False),
        optim=train_lib.optim_config(learning_rate=lr, warmup_steps=2, total_steps=num_steps),
        mesh=mesh or sharding_lib.mesh_config(data=-1),
        model=dict(width=width)))


def test_step_compiles_once_over_three_steps():
    config = make_config()
    model = TinyMLP(16, nnx.Rngs(0))
    optimizer = train_lib.make_optimizer(config.optim)
    graphdef, state = train_lib.init_train_state(model, optimizer, jax.random.key(0))
    traced_loss = chex.assert_max_traces(regression_loss, n=1)
    step = train_lib.make_train_step(graphdef, traced_loss, optimizer, jnp.bfloat16)
    losses = []
    for i in range(3):
        state, metrics = step(state, jax.tree.map(jnp.asarray, batch_at(i)))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 3
    chex.assert_tree_all_finite(state.params)
    assert state.params["w1"].get_value().dtype == jnp.float32  # f32 master weights under bf16 compute


def test_sharded_and_single_device_steps_agree():
    config = make_config()
    results = {}
    for name, devices in (("single", jax.devices()[:1]), ("sharded", jax.devices())):
        mesh = sharding_lib.make_mesh(sharding_lib.mesh_config(data=-1, fsdp=1), devices=devices)
        if name == "sharded":
            mesh = sharding_lib.make_mesh(dict(data=4, fsdp=2), devices=devices)
        model = TinyMLP(16, nnx.Rngs(0))
        optimizer = train_lib.make_optimizer(config.optim)
        graphdef, state = train_lib.init_train_state(model, optimizer, jax.random.key(0), mesh)
        step = train_lib.make_train_step(graphdef, regression_loss, optimizer, jnp.float32)
        for i in range(3):
            state, metrics = step(state, sharding_lib.shard_batch(batch_at(i), mesh))
        results[name] = (jax.device_get(state.params), float(metrics["loss"]))
        if name == "sharded":
            assert len(state.params["w1"].get_value().sharding.device_set) == 8
    chex.assert_trees_all_close(results["single"][0], results["sharded"][0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(results["single"][1], results["sharded"][1], rtol=1e-5)


def _losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_kill_and_resume_reproduces_the_loss_curve(tmp_path):
    config = make_config(num_steps=6)
    full = str(tmp_path / "full")
    train_lib.train(config, full, TinyMLP(16, nnx.Rngs(0)), regression_loss, batch_at)

    class Killed(Exception):
        pass

    def kill_at_4(step, state, metrics):
        if step == 4:
            raise Killed()

    interrupted = str(tmp_path / "interrupted")
    with pytest.raises(Killed):
        train_lib.train(config, interrupted, TinyMLP(16, nnx.Rngs(0)), regression_loss, batch_at,
                        hooks=(kill_at_4,))
    train_lib.train(config, interrupted, TinyMLP(16, nnx.Rngs(1)), regression_loss, batch_at)
    want, got = _losses(full), _losses(interrupted)
    assert sorted(got) == [1, 2, 3, 4, 5, 6] or set(range(1, 7)) <= set(got)
    for step in range(1, 7):
        np.testing.assert_allclose(got[step], want[step], rtol=1e-6)


def test_steps_per_call_trains_exactly_like_one_step_per_call(tmp_path):
    """Scanned calls (4 steps each, then 2 single steps for the remainder of 10) give the same parameters, and
    log, checkpoint and resume at the call boundaries that cross log_every / checkpoint_every."""
    results = {}
    for per_call in (1, 4):
        config = make_config(num_steps=10)
        config.train.steps_per_call = per_call
        config.train.log_every = 3
        workdir = str(tmp_path / f"per_call_{per_call}")
        result = train_lib.train(config, workdir, TinyMLP(16, nnx.Rngs(0)), regression_loss, batch_at)
        results[per_call] = (jax.device_get(result.state.params), sorted(_losses(workdir)), workdir)
    chex.assert_trees_all_close(results[1][0], results[4][0], atol=1e-6, rtol=1e-6)
    assert results[1][1] == [3, 6, 9, 10]
    assert results[4][1] == [4, 8, 9, 10]         # calls end at 4, 8, then single steps 9, 10
    with checkpoint_lib.Checkpointer(os.path.join(results[4][2], "checkpoints")) as ckpt:
        assert 10 in ckpt.all_steps() and 8 in ckpt.all_steps()   # 8 crossed checkpoint_every=3 at step 6


def test_members_train_as_one_program_exactly_like_each_run_alone(tmp_path):
    """train.members: two independent runs (own init, train key and data) vmapped in one program end where each
    ends alone, with clipping active (a clip over both members' gradients would couple them), through the
    scanned steps_per_call path and its single-step remainder, BatchNorm statistics included."""
    def member_batches(i):
        return lambda step: batch_at(step + 1000 * i)

    def stacked_batches(step):
        return jax.tree.map(lambda *xs: np.stack(xs, axis=1), *(member_batches(i)(step) for i in range(2)))

    def configured(members):
        config = make_config(num_steps=7)
        config.optim.grad_clip = 0.05
        config.train.steps_per_call = 3
        config.train.members = members
        return config

    alone = []
    for i in range(2):
        config = configured(1)
        config.train.seed = i
        result = train_lib.train(config, str(tmp_path / f"alone_{i}"), TinyMLP(16, nnx.Rngs(i)), regression_loss,
                                 member_batches(i))
        alone.append(jax.device_get((result.state.params, result.state.model_state)))
    stacked = train_lib.stack_models([TinyMLP(16, nnx.Rngs(i)) for i in range(2)])
    result = train_lib.train(configured(2), str(tmp_path / "members"), stacked, regression_loss, stacked_batches)
    assert result.state.step.shape == (2,) and result.history[-1]["step"] == 7
    trained = train_lib.merge_model(result.graphdef, result.state)
    for i in range(2):
        member = jax.device_get((nnx.state(train_lib.member_model(trained, i), nnx.Param),
                                 nnx.state(train_lib.member_model(trained, i), nnx.Not(nnx.Param))))
        chex.assert_trees_all_close(member, alone[i], atol=1e-6, rtol=1e-5)
    assert not np.allclose(alone[0][0]["w1"].get_value(), alone[1][0]["w1"].get_value())
    with pytest.raises(ValueError, match="train.members=3 needs a model from core.train.stack_models"):
        train_lib.train(configured(3), str(tmp_path / "wrong"), stacked, regression_loss, stacked_batches)


def test_ema_params_follow_the_moving_average_and_are_what_eval_sees(tmp_path):
    """train.ema_decay: the state's average is decay * ema + (1 - decay) * params after every step (checked
    against the raw params the hook sees), merge_model and the eval hook use it, raw=True gives the params;
    it survives a kill and resume; a decay outside [0, 1) is refused."""
    decay = 0.8
    config = make_config(num_steps=6)
    config.train.ema_decay = decay
    config.train.eval_every = 6
    seen, evaluated = [], []

    def record(step, state, metrics):
        seen.append(jax.device_get(state.params))

    def eval_fn(model, step):
        evaluated.append(jax.device_get(nnx.state(model, nnx.Param)))
        return {}
    init = jax.device_get(nnx.state(TinyMLP(16, nnx.Rngs(0)), nnx.Param))
    result = train_lib.train(config, str(tmp_path / "ema"), TinyMLP(16, nnx.Rngs(0)), regression_loss, batch_at,
                             eval_fn=eval_fn, hooks=(record,))
    expected = init
    for params in seen:
        expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, expected, params)
    chex.assert_trees_all_close(jax.device_get(result.state.ema_params), expected, atol=1e-6, rtol=1e-5)
    chex.assert_trees_all_close(evaluated[-1], expected, atol=1e-6, rtol=1e-5)
    merged = train_lib.merge_model(result.graphdef, result.state)
    chex.assert_trees_all_close(jax.device_get(nnx.state(merged, nnx.Param)), expected, atol=1e-6, rtol=1e-5)
    raw = train_lib.merge_model(result.graphdef, result.state, raw=True)
    chex.assert_trees_all_close(jax.device_get(nnx.state(raw, nnx.Param)), seen[-1], atol=1e-6, rtol=1e-6)
    assert not np.allclose(expected["w1"].get_value(), seen[-1]["w1"].get_value())

    class Killed(Exception):
        pass

    def kill_at_4(step, state, metrics):
        if step == 4:
            raise Killed()
    with pytest.raises(Killed):
        train_lib.train(config, str(tmp_path / "killed"), TinyMLP(16, nnx.Rngs(0)), regression_loss, batch_at,
                        hooks=(kill_at_4,))
    resumed = train_lib.train(config, str(tmp_path / "killed"), TinyMLP(16, nnx.Rngs(0)), regression_loss, batch_at)
    chex.assert_trees_all_close(jax.device_get(resumed.state.ema_params), expected, atol=1e-6, rtol=1e-5)
    config.train.ema_decay = 1.0
    with pytest.raises(ValueError, match="train.ema_decay must be in"):
        train_lib.train(config, str(tmp_path / "bad"), TinyMLP(16, nnx.Rngs(0)), regression_loss, batch_at)


def test_steps_per_call_below_one_is_refused():
    config = make_config()
    graphdef, _ = train_lib.init_train_state(TinyMLP(16, nnx.Rngs(0)), train_lib.make_optimizer(config.optim),
                                             jax.random.key(0))
    with pytest.raises(ValueError, match="steps_per_call"):
        train_lib.make_train_step(graphdef, regression_loss, train_lib.make_optimizer(config.optim),
                                  steps_per_call=0)


def test_interrupted_save_is_never_loaded(tmp_path):
    config = make_config(num_steps=3)
    workdir = str(tmp_path / "run")
    train_lib.train(config, workdir, TinyMLP(16, nnx.Rngs(0)), regression_loss, batch_at)
    # A save killed mid-write leaves orbax's temporary directory behind; it must not count as a step.
    os.makedirs(os.path.join(workdir, "checkpoints", "6.orbax-checkpoint-tmp-123", "state"))
    with checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        assert ckpt.latest_step() == 3


def test_checkpoint_of_the_wrong_shape_gives_one_clear_error(tmp_path):
    workdir = str(tmp_path / "run")
    train_lib.train(make_config(num_steps=3), workdir, TinyMLP(16, nnx.Rngs(0)), regression_loss, batch_at)
    with pytest.raises(ValueError, match="different config"):
        train_lib.train(make_config(num_steps=6, width=32), workdir, TinyMLP(32, nnx.Rngs(0)),
                        regression_loss, batch_at)


def test_non_finite_loss_stops_with_one_clear_error_and_no_bad_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")

    def exploding(step):
        batch = batch_at(step)
        if step >= 4:
            batch["y"] = batch["y"] * np.inf
        return batch

    with pytest.raises(FloatingPointError, match="non-finite at step 5"):
        train_lib.train(make_config(num_steps=6), workdir, TinyMLP(16, nnx.Rngs(0)), regression_loss, exploding)
    with checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        assert ckpt.all_steps() == [3]


def test_mesh_that_does_not_match_the_device_count_is_refused():
    with pytest.raises(ValueError, match="devices"):
        sharding_lib.make_mesh(dict(data=3, fsdp=1))
    with pytest.raises(ValueError, match="Unknown mesh axes"):
        sharding_lib.make_mesh(dict(model=8))


def test_to_single_device_drops_the_training_mesh_from_array_types():
    # One-device mesh (training on one GPU): the mesh stays in the arrays' type through device_put, and a
    # jitted consumer's outputs (e.g. a KV cache written from the params) inherit it, so fresh inputs of the
    # same shape retrace (benchmarks/decode.py measured a recompile inside a timed call).
    mesh = sharding_lib.make_mesh(sharding_lib.mesh_config(data=1), devices=jax.devices()[:1])
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    params = jax.jit(lambda: jnp.ones((8, 4)), out_shardings=replicated)()  # as a train step returns them
    has_mesh = lambda x: not jax.typeof(x).sharding.mesh.empty
    consumer = lambda: jax.jit(lambda w: w[:2] * 2)  # fresh each time: the dispatch cache ignores the type
    assert has_mesh(params) and has_mesh(jax.device_put(params, jax.devices()[0]))
    assert has_mesh(consumer()(jax.device_put(params, jax.devices()[0])))
    unplaced = sharding_lib.to_single_device({"w": params})["w"]
    assert not has_mesh(unplaced) and not has_mesh(consumer()(unplaced))
    assert unplaced.devices() == {jax.devices()[0]}
    np.testing.assert_array_equal(unplaced, params)


def test_write_json_is_atomic_and_keeps_numbers_as_numbers(tmp_path):
    path = str(tmp_path / "sub" / "result.json")
    metrics_lib.write_json(path, dict(benchmark="unit", value=np.float32(0.5), step=jnp.int32(3)))
    with open(path) as f:
        result = json.load(f)
    assert result["value"] == 0.5 and result["step"] == 3 and result["benchmark"] == "unit"
    assert os.listdir(tmp_path / "sub") == ["result.json"]
    assert metrics_lib.read_json(path)["step"] == 3
    assert metrics_lib.read_json(str(tmp_path / "absent.json")) is None
    assert metrics_lib.read_json(str(tmp_path / "absent.json"), {}) == {}


def _count_ops(compiled_text: str) -> int:
    entry = compiled_text[compiled_text.index("ENTRY"):]
    return sum(" = " in line for line in entry.splitlines())


def test_flattened_adam_trains_like_per_leaf_adam_with_fewer_ops():
    """optim.flatten: same parameters after 8 steps (Adam is elementwise; only the clip norm's summation order
    differs), a smaller compiled step on a model of many small leaves, and decay by shape refused."""
    params, ops = {}, {}
    for flatten in (False, True):
        config = make_config(num_steps=8)
        config.optim.name = "adam"
        config.optim.grad_clip = 0.05          # small, so clipping is active and its norm is exercised
        config.optim.flatten = flatten
        model = TinyMLP(16, nnx.Rngs(0))
        optimizer = train_lib.make_optimizer(config.optim)
        graphdef, state = train_lib.init_train_state(model, optimizer, jax.random.key(0))
        step = train_lib.make_train_step(graphdef, regression_loss, optimizer, jnp.float32)
        batch0 = jax.tree.map(jnp.asarray, batch_at(0))
        ops[flatten] = _count_ops(jax.jit(step).lower(state, batch0).compile().as_text())
        for i in range(8):
            state, _ = step(state, jax.tree.map(jnp.asarray, batch_at(i)))
        params[flatten] = jax.device_get(state.params)
    chex.assert_trees_all_close(params[False], params[True], atol=1e-6, rtol=1e-5)
    assert not np.allclose(params[False]["w1"].get_value(), TinyMLP(16, nnx.Rngs(0)).w1.get_value())
    assert ops[True] < ops[False], ops
    config = make_config()
    config.optim.flatten = True                # adamw with decay 0.1: the mask would see one vector
    with pytest.raises(ValueError, match="optim.flatten works with optimizer 'adam'"):
        train_lib.make_optimizer(config.optim)
