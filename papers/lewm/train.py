"""LeWM training: teacher-forced latent prediction + λ·SIGReg on the encoder embeddings, through core.train.

Clips (4 frames at frameskip 5 with 4 action blocks) are generated on device (papers/lewm/data.py) from random
starts and expert rollouts, as a pure function of (data seed, step): resuming needs no data state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from core import train as train_lib
from core.losses.sigreg import sigreg
from papers.lewm.data import action_statistics, make_batch_fn
from papers.lewm.model import LeWM, LeWMConfig


def model_config(config: ml_collections.ConfigDict) -> LeWMConfig:
    return LeWMConfig(**config.model.to_dict())


def make_loss_fn(config: ml_collections.ConfigDict):
    history, weight, slices = config.model.history, config.loss.sigreg_weight, config.loss.num_slices

    def loss_fn(model: LeWM, batch, rng):
        sigreg_key, dropout_key = jax.random.split(rng)
        emb = model.encode(batch["frames"])                                   # [B, T, D]
        pred = model.predict(emb[:, :history], batch["actions"][:, :history], dropout_key=dropout_key)
        target = emb[:, 1:history + 1]
        pred_loss = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))
        regulariser = sigreg(jnp.swapaxes(emb, 0, 1), sigreg_key, num_slices=slices)
        std = jnp.std(emb.astype(jnp.float32).reshape(-1, emb.shape[-1]), axis=0)
        return pred_loss + weight * regulariser, {
            "pred_loss": pred_loss, "sigreg": regulariser, "emb_std_mean": std.mean(), "emb_std_min": std.min()}

    return loss_fn


def train_lewm(config: ml_collections.ConfigDict, workdir: str) -> train_lib.TrainResult:
    model = LeWM(model_config(config), rngs=nnx.Rngs(params=config.train.seed))
    batches = make_batch_fn(config)
    if model.config.action_standardization:   # statistics of the training data, saved with the weights
        model.set_action_statistics(*action_statistics(batches, config.data.get("action_stats_batches", 8),
                                                       model.config.action_dim))
    return train_lib.train(config, workdir, model, make_loss_fn(config), batches)


def restore_model(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> LeWM:
    """The trained model from workdir/checkpoints (latest step unless given), in eval mode."""
    return train_lib.restore_trained_model(
        config, workdir, LeWM(model_config(config), rngs=nnx.Rngs(params=config.train.seed)), step)
