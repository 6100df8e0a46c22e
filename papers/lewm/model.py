"""LeWorldModel (arXiv 2603.19312): ViT encoder + BN projector, AdaLN-zero action-conditioned causal predictor.

API (used by training, planning, surprise):
    LeWMConfig (frozen dataclass; LeWMConfig.smoke() is a tiny CPU variant)
    model = LeWM(config, rngs=nnx.Rngs(0));  model.eval() for inference (BatchNorm running stats)
    model.encode(pixels uint8[..., H, W, 3]) -> z f32[..., D]          (resized to config.image_size)
    model.predict(z_hist[B, T, D], action_blocks[B, T, frameskip*A], dropout_key=None, last_only=False)
        -> z_pred[B, T, D] (or [B, 1, D] for last_only)
        causal: output t predicts the embedding of frame t + 1 from frames ≤ t and action blocks ≤ t
    model.rollout(z_hist[B, H, D], past_blocks[B, H-1, fA], plan_blocks[B, N, fA]) -> z_future[B, N, D]
        autoregressive over the plan with a sliding window of `history` frames
    Action blocks are always raw (as the env takes them); with config.action_standardization the model z-scores
    them per action column inside `predict` with statistics stored in the model (set_action_statistics, saved
    in checkpoints), so CEM samples raw actions while the predictor sees standardised ones (the official code).
Sizes of the reference configuration (2-D actions): 18,034,478 parameters.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from core.nn.adaln import AdaLNZeroBlock, stacked_modulations
from core.nn.vit import ViT, ViTConfig
from kernels_pallas.adaln_block import ops as adaln_block_ops
from kernels_pallas.adaln_block import reference as adaln_block_reference

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # tuples: importing a config must not start a JAX backend
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class LeWMConfig:
    image_size: int = 224
    patch_size: int = 14
    encoder_width: int = 192
    encoder_depth: int = 12
    encoder_heads: int = 3
    encoder_mlp: int = 768
    embed_dim: int = 192
    projector_hidden: int = 2048
    predictor_depth: int = 6
    predictor_heads: int = 16
    predictor_head_dim: int = 64
    predictor_mlp: int = 2048
    history: int = 3
    dropout: float = 0.1
    # The official code's choices (papers/lewm/README.md, "Differences"): "official", 0.1, 1.0. Defaults keep
    # the layout every measured LeWM number so far was trained with, until the two are compared on the GPU.
    predictor_layout: str = "dit"
    attention_dropout: float = 0.0
    predictor_pos_std: float = 0.02
    action_dim: int = 2
    frameskip: int = 5
    # The official code z-scores actions with the training data's per-column statistics before the action
    # encoder; off by default so the TwoRoom / Push-T models and numbers keep their meaning.
    action_standardization: bool = False
    # Inference predictor blocks (planning, rollouts): "xla" (the module) or "pallas" (kernels_pallas.adaln_block,
    # one fused launch per block; interpret mode off the GPU). Training always runs the module (dropout, grads).
    predictor_kernel: str = "xla"

    def __post_init__(self):
        if self.predictor_kernel not in ("xla", "pallas"):
            raise ValueError(f"predictor_kernel must be 'xla' or 'pallas', got {self.predictor_kernel!r}.")

    @classmethod
    def smoke(cls, **overrides) -> "LeWMConfig":
        small = dict(image_size=56, encoder_width=64, encoder_depth=2, encoder_heads=2, encoder_mlp=128,
                     embed_dim=64, projector_hidden=128, predictor_depth=2, predictor_heads=4,
                     predictor_head_dim=16, predictor_mlp=128)
        return cls(**{**small, **overrides})

    @property
    def action_block_dim(self) -> int:
        return self.frameskip * self.action_dim


class ProjectorMLP(nnx.Module):
    """Linear -> BatchNorm -> GELU -> Linear (BN, not LN: the ViT's final LN blocks SIGReg, paper §3.1)."""

    def __init__(self, din: int, hidden: int, dout: int, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(din, hidden, rngs=rngs)
        self.norm = nnx.BatchNorm(hidden, momentum=0.9, epsilon=1e-5, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dout, rngs=rngs)

    def __call__(self, x):
        lead = x.shape[:-1]
        h = self.norm(self.fc1(x.reshape(-1, x.shape[-1])))
        return self.fc2(jax.nn.gelu(h, approximate=False)).reshape(*lead, -1)


class ActionEmbedder(nnx.Module):
    """Conv1d(k=1) over the flattened action block, then Linear(4·D) -> SiLU -> Linear(D)."""

    def __init__(self, block_dim: int, width: int, rngs: nnx.Rngs):
        self.pointwise = nnx.Linear(block_dim, block_dim, rngs=rngs)
        self.fc1 = nnx.Linear(block_dim, 4 * width, rngs=rngs)
        self.fc2 = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, blocks):
        return self.fc2(jax.nn.silu(self.fc1(self.pointwise(blocks))))


class ActionStatistic(nnx.Variable):
    """Per-column action mean / std of the training data: model state, saved with the weights, never trained
    and never cast (precision.cast_params casts nnx.Param only)."""


def standardize_actions(blocks: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Action blocks [..., frameskip * A] z-scored per action column (mean, std: [A]), in f32."""
    a = blocks.astype(jnp.float32).reshape(blocks.shape[:-1] + (-1, mean.shape[-1]))
    return ((a - mean) / std).reshape(blocks.shape)


def unstandardize_actions(blocks: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """The inverse of ``standardize_actions``."""
    a = blocks.astype(jnp.float32).reshape(blocks.shape[:-1] + (-1, mean.shape[-1]))
    return (a * std + mean).reshape(blocks.shape)


class LeWM(nnx.Module):
    def __init__(self, config: LeWMConfig, *, rngs: nnx.Rngs):
        self.config = config
        vit = ViTConfig(image_size=config.image_size, patch_size=config.patch_size, width=config.encoder_width,
                        depth=config.encoder_depth, heads=config.encoder_heads, mlp_dim=config.encoder_mlp)
        d = config.embed_dim
        self.encoder = ViT(vit, rngs)
        self.projector = ProjectorMLP(config.encoder_width, config.projector_hidden, d, rngs)
        self.action_embedder = ActionEmbedder(config.action_block_dim, d, rngs)
        self.predictor_pos = nnx.Param(config.predictor_pos_std
                                       * jax.random.normal(rngs.params(), (1, config.history, d)))
        self.predictor = nnx.List([
            AdaLNZeroBlock(d, config.predictor_heads, config.predictor_head_dim, config.predictor_mlp,
                           config.dropout, rngs, layout=config.predictor_layout,
                           attention_dropout=config.attention_dropout) for _ in range(config.predictor_depth)])
        self.predictor_norm = nnx.LayerNorm(d, epsilon=1e-6, rngs=rngs)
        self.pred_proj = ProjectorMLP(d, config.projector_hidden, d, rngs)
        if config.action_standardization:       # identity until set_action_statistics (absent when off, so
            #                                     checkpoints without it keep their structure)
            self.action_mean = ActionStatistic(jnp.zeros((config.action_dim,), jnp.float32))
            self.action_std = ActionStatistic(jnp.ones((config.action_dim,), jnp.float32))

    def set_action_statistics(self, mean: jax.Array, std: jax.Array) -> None:
        """Stores the training data's per-column action mean and std (config.action_standardization only)."""
        if not self.config.action_standardization:
            raise ValueError("set_action_statistics needs model.action_standardization=True in the config.")
        shape = (self.config.action_dim,)
        self.action_mean[...] = jnp.asarray(mean, jnp.float32).reshape(shape)
        self.action_std[...] = jnp.asarray(std, jnp.float32).reshape(shape)

    def model_actions(self, action_blocks: jax.Array) -> jax.Array:
        """Raw action blocks as the action encoder takes them: standardised when the config asks for it."""
        if not self.config.action_standardization:
            return action_blocks
        return standardize_actions(action_blocks, self.action_mean[...], self.action_std[...])

    def _pixels(self, pixels):
        x = pixels.astype(jnp.float32) / 255.0 if pixels.dtype == jnp.uint8 else pixels.astype(jnp.float32)
        size = self.config.image_size
        if x.shape[-3:-1] != (size, size):
            x = jax.image.resize(x, x.shape[:-3] + (size, size, x.shape[-1]), "linear")
        return ((x - jnp.array(IMAGENET_MEAN)) / jnp.array(IMAGENET_STD)).astype(self.predictor_pos[...].dtype)

    def encode(self, pixels: jax.Array) -> jax.Array:
        lead = pixels.shape[:-3]
        x = self._pixels(pixels)
        x = x.reshape((-1,) + x.shape[-3:])
        return self.projector(self.encoder(x)).reshape(*lead, -1)

    def predict(self, z_hist: jax.Array, action_blocks: jax.Array, dropout_key: jax.Array | None = None,
                last_only: bool = False):
        """Predicted next embeddings for every frame of z_hist, or only for the last one (`last_only`, what a
        rollout uses: the output projection then runs on one token instead of `history`)."""
        steps = z_hist.shape[1]
        if steps > self.config.history:
            raise ValueError(f"The predictor takes at most {self.config.history} frames, got {steps}.")
        x = z_hist.astype(self.predictor_pos[...].dtype) + self.predictor_pos[...][:, :steps]
        condition = self.action_embedder(self.model_actions(action_blocks).astype(x.dtype))
        keys = (jax.random.split(dropout_key, len(self.predictor)) if dropout_key is not None
                else [None] * len(self.predictor))
        # all blocks' AdaLN modulations in one GEMM (they share the condition): fewer kernels per planner call
        modulations = stacked_modulations(self.predictor, condition)
        if self.config.predictor_kernel == "pallas" and dropout_key is None:
            prepared = getattr(self, "fused_predictor_weights", None)
            weights = (prepared.get_value() if prepared is not None
                       else [adaln_block_reference.block_params(block) for block in self.predictor])
            first = self.predictor[0]
            x = adaln_block_ops.adaln_blocks(x, [m.astype(x.dtype) for m in modulations], weights,
                                             heads=first.heads, head_dim=first.head_dim, causal=True,
                                             layout=first.layout)
        else:
            for block, key, modulation in zip(self.predictor, keys, modulations):
                x = block(x, condition, causal=True, key=key, modulation=modulation)
        if last_only:
            x = x[:, -1:]
        return self.pred_proj(self.predictor_norm(x))

    def rollout(self, z_hist: jax.Array, past_blocks: jax.Array, plan_blocks: jax.Array) -> jax.Array:
        """Predicts the embeddings after each planned action block (N steps, history window slides).

        Unrolled in Python (N is the planning horizon, ~5): the predictor's BatchNorm may update its
        statistics in train mode, which a lax.scan body would not allow.
        """
        z_window, a_window, future = z_hist, past_blocks, []
        for n in range(plan_blocks.shape[1]):
            actions = jnp.concatenate([a_window, plan_blocks[:, n:n + 1]], 1)
            # last_only changes BatchNorm's batch statistics in train mode, so only eval rollouts use it
            z_next = self.predict(z_window, actions, last_only=self.pred_proj.norm.use_running_average)[:, -1]
            future.append(z_next)
            z_window = jnp.concatenate([z_window[:, 1:], z_next[:, None]], 1)
            a_window = actions[:, 1:]
        return jnp.stack(future, 1)


def with_predictor_kernel(model: LeWM, kernel: str) -> LeWM:
    """A model sharing `model`'s weights, in eval mode, whose inference predictor runs on `kernel` ("xla" or
    "pallas"; LeWMConfig.predictor_kernel)."""
    graphdef, _ = nnx.split(nnx.eval_shape(
        lambda: LeWM(dataclasses.replace(model.config, predictor_kernel=kernel), rngs=nnx.Rngs(0))))
    twin = nnx.merge(graphdef, nnx.state(model))
    twin.eval()
    return twin


class FusedPredictorWeights(nnx.Variable):
    """The predictor blocks' weights padded for the Pallas kernels (kernels_pallas.adaln_block.prepare_params)."""


def prepare_fused_predictor(model):
    """Pads the predictor's weights for the Pallas blocks once, where this is called (inside a jitted plan, before
    CEM's loops: XLA does not hoist size-inflating pads out of a while loop, so padding in the blocks themselves
    cost ~1k pad kernels per plan). A no-op for the XLA predictor and for other planning models (oracles). The
    padded copy is a snapshot: call it again after the weights change."""
    if isinstance(model, LeWM) and model.config.predictor_kernel == "pallas":
        model.fused_predictor_weights = FusedPredictorWeights(
            [adaln_block_ops.prepare_params(adaln_block_reference.block_params(block)) for block in model.predictor])
    return model


def param_count(model: LeWM) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
