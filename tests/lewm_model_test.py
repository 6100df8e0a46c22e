"""LeWM: reference parameter count, causal action conditioning, zero-initialised AdaLN, smoke training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core import config as config_lib
from papers.lewm import train as lewm_train
from papers.lewm.model import LeWM, LeWMConfig, param_count


def test_reference_configuration_has_the_papers_parameter_count():
    assert param_count(LeWM(LeWMConfig(), rngs=nnx.Rngs(0))) == 18_034_478


def test_official_predictor_options_keep_the_parameters_and_train_with_dropout():
    official = LeWMConfig.smoke(predictor_layout="official", attention_dropout=0.1, predictor_pos_std=1.0)
    model = LeWM(official, rngs=nnx.Rngs(0))
    assert param_count(model) == param_count(LeWM(LeWMConfig.smoke(), rngs=nnx.Rngs(0)))
    assert 0.7 < float(jnp.std(model.predictor_pos[...])) < 1.3          # unit-normal positions, as the official
    for block in model.predictor:      # AdaLN-zero gates start at 0: open them so dropout can show
        block.modulation.kernel[...] = 0.1 * jax.random.normal(jax.random.key(1), block.modulation.kernel.shape)
    z, actions = jax.random.normal(jax.random.key(2), (2, 3, 64)), jnp.ones((2, 3, 10))
    a, b = (model.predict(z, actions, dropout_key=jax.random.key(i)) for i in (0, 1))
    assert a.shape == (2, 3, 64) and bool(jnp.all(jnp.isfinite(a))) and float(jnp.abs(a - b).max()) > 0


@pytest.fixture(scope="module", params=["dit", "official"])
def small(request):
    model = LeWM(LeWMConfig.smoke(dropout=0.0, predictor_layout=request.param), rngs=nnx.Rngs(0))
    # Give the zero-initialised AdaLN modulations some weight so actions matter.
    for block in model.predictor:
        block.modulation.kernel[...] = 0.1 * jax.random.normal(jax.random.key(1), block.modulation.kernel.shape)
    model.eval()
    return model


def test_prediction_is_causal_in_frames_and_actions(small):
    z = jax.random.normal(jax.random.key(0), (2, 3, 64))
    actions = jax.random.normal(jax.random.key(1), (2, 3, 10))
    base = small.predict(z, actions)
    later = small.predict(z.at[:, 2].add(1.0), actions.at[:, 2].add(1.0))
    np.testing.assert_allclose(base[:, :2], later[:, :2], atol=1e-5)
    assert float(jnp.abs(base[:, 2] - later[:, 2]).max()) > 1e-3
    other_action = small.predict(z, actions.at[:, 0].add(1.0))
    assert float(jnp.abs(other_action[:, 0] - base[:, 0]).max()) > 1e-3


def test_adaln_zero_blocks_start_as_identity():
    model = LeWM(LeWMConfig.smoke(dropout=0.0), rngs=nnx.Rngs(0))
    model.eval()
    z = jax.random.normal(jax.random.key(0), (2, 3, 64))
    a = jax.random.normal(jax.random.key(1), (2, 3, 10))
    want = model.pred_proj(model.predictor_norm(z + model.predictor_pos[...]))
    np.testing.assert_allclose(model.predict(z, a), want, atol=1e-5)


def test_rollout_matches_stepwise_predictions(small):
    z = jax.random.normal(jax.random.key(2), (1, 3, 64))
    past = jax.random.normal(jax.random.key(3), (1, 2, 10))
    plan = jax.random.normal(jax.random.key(4), (1, 2, 10))
    future = small.rollout(z, past, plan)
    first = small.predict(z, jnp.concatenate([past, plan[:, :1]], 1))[:, -1]
    window = jnp.concatenate([z[:, 1:], first[:, None]], 1)
    second = small.predict(window, jnp.concatenate([past[:, 1:], plan], 1))[:, -1]
    np.testing.assert_allclose(future[:, 0], first, atol=1e-5)
    np.testing.assert_allclose(future[:, 1], second, atol=1e-5)


def test_smoke_training_lowers_the_prediction_loss_and_logs_the_collapse_monitor(tmp_path):
    config = config_lib.load_config("configs/lewm/tworoom.py:smoke")
    config = config_lib.apply_overrides(config, {"train.num_steps": 12, "optim.total_steps": 12,
                                                 "train.log_every": 1, "train.checkpoint_every": 12})
    result = lewm_train.train_lewm(config, str(tmp_path / "run"))
    rows = [r for r in result.history if "pred_loss" in r]
    assert {"sigreg", "emb_std_mean", "emb_std_min"} <= set(rows[0])
    assert np.mean([r["loss"] for r in rows[-3:]]) < np.mean([r["loss"] for r in rows[:3]])
    model = lewm_train.restore_model(config, str(tmp_path / "run"))
    assert model.encode(jnp.zeros((1, 224, 224, 3), jnp.uint8)).shape == (1, 64)


def test_pusht_batches_come_from_a_simulated_bank_and_depend_only_on_the_step():
    config = config_lib.load_config("configs/lewm/pusht.py:smoke")
    assert config.data.bank_episodes > 0
    batch_at = lewm_train.make_batch_fn(config)
    first, again, other = batch_at(3), lewm_train.make_batch_fn(config)(3), batch_at(4)
    assert first["frames"].shape == (8, 4, 224, 224, 3) and first["frames"].dtype == np.uint8
    assert first["actions"].shape == (8, 4, 10)
    np.testing.assert_array_equal(first["frames"], again["frames"])      # rebuilt bank, same batch
    assert not np.array_equal(first["actions"], other["actions"])


def test_image_size_variant_renders_and_encodes_at_that_size():
    # 112 px = 8 x 8 patches of 14: a quarter of the paper's tokens. Push-T and Reacher render at that size;
    # TwoRoom's world is in image pixels, so it keeps its 224-px frames and the model resizes them.
    config = config_lib.load_config("configs/lewm/pusht.py:smoke,image_size=112")
    assert config.model.image_size == 112 and config.env.params.image_size == 112
    batch = lewm_train.make_batch_fn(config)(0)
    assert batch["frames"].shape == (8, 4, 112, 112, 3)
    model = LeWM(lewm_train.model_config(config), rngs=nnx.Rngs(0))
    z = model.encode(jnp.asarray(batch["frames"]))
    assert z.shape == (8, 4, config.model.embed_dim) and bool(jnp.all(jnp.isfinite(z)))
    assert config_lib.load_config("configs/lewm/reacher.py:image_size=112").env.params.image_size == 112
    tworoom = config_lib.load_config("configs/lewm/tworoom.py:image_size=112")
    assert tworoom.model.image_size == 112 and "image_size" not in tworoom.env.params
    with pytest.raises(ValueError, match="multiple of the 14-px patch"):
        config_lib.load_config("configs/lewm/pusht.py:image_size=100")


@pytest.mark.slow
def test_data_parallel_loss_and_gradient_equal_the_one_device_ones():
    # mesh.data=-1 (the config) spreads each batch over every device; SIGReg and the projector's BatchNorm must
    # still see the global batch, so the loss terms and the gradient on 8 fake devices match one device's.
    # Per-device statistics would be far off (a BatchNorm over one sample per device; tests/sigreg_test.py shows
    # SIGReg's). XLA:CPU's sharded program is not bitwise the same: forward terms agree to ~1e-4, the gradient
    # (through a BatchNorm over 8 samples) to ~2e-3 of its norm.
    from core import sharding

    config = config_lib.load_config("configs/lewm/tworoom.py:smoke")
    batch = jax.device_get(lewm_train.make_batch_fn(config)(0))
    model = LeWM(lewm_train.model_config(config), rngs=nnx.Rngs(params=0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss_fn = lewm_train.make_loss_fn(config)

    @jax.jit
    def loss_and_grad(params, rest, batch):
        def loss(params):
            merged = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))
            return loss_fn(merged, batch, jax.random.key(3))
        return jax.value_and_grad(loss, has_aux=True)(params)

    outputs = []
    for mesh in (sharding.make_mesh(dict(data=1), devices=jax.devices()[:1]), sharding.make_mesh(config.mesh)):
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        placed = sharding.shard_batch(batch, mesh)
        (_, metrics), grads = loss_and_grad(jax.device_put(params, replicated), jax.device_put(rest, replicated),
                                            placed)
        outputs.append(jax.device_get((metrics, grads)))
    assert placed["frames"].sharding.spec[0] == ("data", "fsdp") and mesh.shape["data"] == 8
    (one, grads_one), (eight, grads_eight) = outputs
    for name in ("pred_loss", "sigreg", "emb_std_mean"):
        np.testing.assert_allclose(eight[name], one[name], rtol=1e-3, err_msg=name)
    flat_one, flat_eight = (np.concatenate([np.ravel(g) for g in jax.tree.leaves(t)]) for t in (grads_one, grads_eight))
    assert np.linalg.norm(flat_eight - flat_one) <= 1e-2 * np.linalg.norm(flat_one)
