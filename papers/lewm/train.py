"""LeWM training: teacher-forced latent prediction + λ·SIGReg on the encoder embeddings, through core.train.

Clips (4 frames at frameskip 5 with 4 action blocks) are generated on device by core.envs from random starts
and expert rollouts, as a pure function of (data seed, step): resuming needs no data state.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from core import train as train_lib
from core.envs import push_t, rollout, two_room
from core.losses.sigreg import sigreg
from papers.lewm.model import LeWM, LeWMConfig

ENVS = {"tworoom": two_room.TwoRoom, "pusht": push_t.PushT}


def make_env(config: ml_collections.ConfigDict):
    if config.env.name not in ENVS:
        raise ValueError(f"Unknown env {config.env.name!r}; use one of {sorted(ENVS)}.")
    return ENVS[config.env.name]()


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


def make_batch_fn(config: ml_collections.ConfigDict, env=None):
    """step -> {'frames': uint8[B, 4, H, W, 3], 'actions': f32[B, 4, frameskip*A]} rendered on device.

    `config.data.bank_episodes` = 0: every clip is a fresh expert rollout (`rollout.sample_clips`); > 0: that
    many episodes of max_offset + clip-span steps are simulated once and clips are cut from them
    (`rollout.clips_from_bank`; same clip distribution, a finite dataset as in the paper, and no simulation
    in the step). Either way a batch is a pure function of (data seed, step), so resuming needs no data state.
    """
    env = make_env(config) if env is None else env
    key = jax.random.key(config.train.data_seed)
    frames, frameskip = config.model.history + 1, config.model.frameskip
    batch, max_offset = config.data.batch_size, config.data.max_offset
    episodes = config.data.bank_episodes

    if episodes:
        bank_key, key = jax.random.split(key)
        bank = jax.jit(rollout.simulate_bank, static_argnums=(0, 2, 3))(
            env, bank_key, episodes, max_offset + frames * frameskip)

        @jax.jit
        def from_bank(bank, step):
            clips = rollout.clips_from_bank(env, bank, jax.random.fold_in(key, step), batch, frames, frameskip)
            return {"frames": clips.frames, "actions": clips.actions}

        return lambda step: from_bank(bank, jnp.int32(step))     # the bank is an argument, not a constant

    @jax.jit
    def batch_at(step):
        clips = rollout.sample_clips(env, jax.random.fold_in(key, step), batch, num_frames=frames,
                                     frameskip=frameskip, max_offset=max_offset)
        return {"frames": clips.frames, "actions": clips.actions}

    return lambda step: batch_at(jnp.int32(step))


def make_train_setup(config: ml_collections.ConfigDict, seed: int = 0):
    """(model, graphdef, state, step_fn, mesh): a fresh LeWM, its train state on config.mesh and the jitted
    bf16 train step, as `train_lewm` runs them (for benchmarks and profiles that time single steps)."""
    from core import sharding

    mesh = sharding.make_mesh(config.mesh)
    model = LeWM(model_config(config), rngs=nnx.Rngs(seed))
    optimizer = train_lib.make_optimizer(config.optim)
    graphdef, state = train_lib.init_train_state(model, optimizer, jax.random.key(seed), mesh)
    step_fn = train_lib.make_train_step(graphdef, make_loss_fn(config), optimizer,
                                        jnp.dtype(config.train.compute_dtype))
    return model, graphdef, state, step_fn, mesh


def train_lewm(config: ml_collections.ConfigDict, workdir: str) -> train_lib.TrainResult:
    model = LeWM(model_config(config), rngs=nnx.Rngs(params=config.train.seed))
    return train_lib.train(config, workdir, model, make_loss_fn(config), make_batch_fn(config))


def restore_model(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> LeWM:
    """The trained model from workdir/checkpoints (latest step unless given), in eval mode."""
    from core import checkpoint as checkpoint_lib

    model = LeWM(model_config(config), rngs=nnx.Rngs(params=config.train.seed))
    optimizer = train_lib.make_optimizer(config.optim)
    graphdef, state = train_lib.init_train_state(model, optimizer, jax.random.key(config.train.seed))
    with checkpoint_lib.Checkpointer(f"{workdir}/checkpoints") as ckpt:
        state = ckpt.restore(state, step)
    model = train_lib.merge_model(graphdef, state)
    model.eval()
    return model
