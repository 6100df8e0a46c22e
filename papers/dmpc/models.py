"""D-MPC's learned pieces and the baselines' in one NNX module, trained by one loss on the same segments.

    proposal   multi-step diffusion ρ(a_{t:t+F} | s_{t-H+1:t})                 (D-MPC)
    dynamics   multi-step diffusion p(s_{t+1:t+F} | s_{t-H+1:t}, a_{t:t+F})    (D-MPC)
    value      J(s_t, s_{t+1:t+F}, a_{t:t+F}) regressed on the discounted return from t (terminal penalty);
               an ensemble of `ModelDims.ensemble` members (online bootstrap), scored by their mean or a lower bound
    onestep    one-step MLP dynamics s_{t+1} - s_t = f(s_t, a_t), an ensemble (MBOP, one-step-dynamics ablation)
    gaussian   Gaussian (diagonal) proposal over the F-step chunk             (Gaussian-proposal ablation)
    bc         behaviour cloning a_t = π(s_{t-H+1:t})                         (BC baseline, MBOP's proposal)

The heads share nothing but the input normalisation, and the losses add, so Adam (no weight decay) trains
each head exactly as if alone except for the global-norm gradient clip. Fine-tuning only the dynamics is the
same step with the other losses weighted 0 (zero gradients, zero Adam updates).
Denoisers are residual MLPs over the flattened chunk (the paper uses Transformers; see README); they predict ε or
v (`ModelDims.prediction`).
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core import diffusion
from core import fileio
from core.nn.adaln import AdaLNZeroBlock
from core import train as train_lib


class Stat(nnx.Variable):
    """Data statistics kept in the model state (checkpointed, never trained)."""


@dataclasses.dataclass(frozen=True)
class ModelDims:
    obs_dim: int
    action_dim: int
    history: int = 1
    horizon: int = 8
    hidden: int = 256
    depth: int = 3
    time_embed: int = 64
    prediction: str = "epsilon"     # what both denoisers predict: "epsilon", "v" or "x0" (core.diffusion)
    ensemble: int = 1               # members of the value and one-step heads (MBOP's ensembles)
    # the dynamics denoiser: "mlp" (Denoiser, the whole chunk flat) or "dit" (StepDenoiser, one token per step)
    dynamics_arch: str = "mlp"


class ResidualMLP(nnx.Module):
    def __init__(self, din: int, dout: int, hidden: int, depth: int, rngs: nnx.Rngs):
        self.inp = nnx.Linear(din, hidden, rngs=rngs)
        self.blocks = nnx.List([nnx.Sequential(nnx.LayerNorm(hidden, rngs=rngs), nnx.Linear(hidden, hidden, rngs=rngs),
                                               jax.nn.gelu, nnx.Linear(hidden, hidden, rngs=rngs))
                                for _ in range(depth)])
        self.norm = nnx.LayerNorm(hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, dout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(jax.nn.gelu(self.norm(h)))


class MLPEnsemble(nnx.Module):
    """`members` independently initialised ResidualMLPs stored stacked on a leading axis and applied with
    nnx.vmap (one batched matmul per layer): x [B, din] -> [members, B, dout]."""

    def __init__(self, din: int, dout: int, hidden: int, depth: int, members: int, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=members)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(rngs):
            return ResidualMLP(din, dout, hidden, depth, rngs)
        self.members = create(rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # plain jax.vmap over the split state: nnx.vmap refuses modules merged inside the trainer's traced step
        graphdef, state = nnx.split(self.members)
        return jax.vmap(lambda member: nnx.merge(graphdef, member)(x))(state)


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
    half = dim // 2
    freqs = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half) / half)
    angles = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1)


class Denoiser(nnx.Module):
    """eps(x_t[B, D], t[B], cond[B, C]) for the core.diffusion samplers."""

    def __init__(self, x_dim: int, cond_dim: int, dims: ModelDims, rngs: nnx.Rngs):
        self.time_embed = dims.time_embed
        self.net = ResidualMLP(x_dim + cond_dim + dims.time_embed, x_dim, dims.hidden, dims.depth, rngs)

    def __call__(self, x: jax.Array, t: jax.Array, cond: jax.Array) -> jax.Array:
        emb = timestep_embedding(t, self.time_embed).astype(x.dtype)
        return self.net(jnp.concatenate([x, cond.astype(x.dtype), emb], -1))


class StepDenoiser(nnx.Module):
    """The dynamics denoiser as a small DiT over the chunk's F steps, closer to the paper's per-step tokens:
    token k holds noisy state k+1 and action k (the action that produced it), blocks are AdaLN-zero
    conditioned on the history and the diffusion time, and attention is causal, so state k+1 is denoised from
    actions 0..k only: the flat MLP (`Denoiser`) has no notion of which action can move which step, and on
    halfcheetah its futures ranked one state's candidates poorly (papers/dmpc/README.md, session 21)."""

    def __init__(self, dims: ModelDims, rngs: nnx.Rngs, width: int = 128, layers: int = 2, heads: int = 4):
        S, A, H, F = dims.obs_dim, dims.action_dim, dims.history, dims.horizon
        self.obs_dim, self.action_dim, self.horizon, self.time_embed = S, A, F, dims.time_embed
        self.embed = nnx.Linear(S + A, width, rngs=rngs)
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (F, width)))
        self.condition = nnx.Linear(H * S + dims.time_embed, width, rngs=rngs)
        self.blocks = nnx.List([AdaLNZeroBlock(width, heads, width // heads, 2 * width, 0.0, rngs)
                                for _ in range(layers)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.out = nnx.Linear(width, S, rngs=rngs)

    def __call__(self, x: jax.Array, t: jax.Array, cond: jax.Array) -> jax.Array:
        """x [B, F*S], t [B], cond [B, H*S + F*A] (history, then the actions, as Denoiser's) -> [B, F*S]."""
        B, F, S, A = x.shape[0], self.horizon, self.obs_dim, self.action_dim
        cond = cond.astype(x.dtype)
        history, actions = cond[:, :-F * A], cond[:, -F * A:].reshape(B, F, A)
        tokens = self.embed(jnp.concatenate([x.reshape(B, F, S), actions], -1)) + self.position[...]
        emb = timestep_embedding(t, self.time_embed).astype(x.dtype)
        condition = self.condition(jnp.concatenate([history, emb], -1))[:, None]            # [B, 1, width]
        for block in self.blocks:
            tokens = block(tokens, condition, causal=True)
        return self.out(jax.nn.gelu(self.norm(tokens))).reshape(B, F * S)


DYNAMICS_ARCHS = ("mlp", "dit")


class DMPCModels(nnx.Module):
    def __init__(self, dims: ModelDims, rngs: nnx.Rngs):
        self.dims = dims
        S, A, H, F = dims.obs_dim, dims.action_dim, dims.history, dims.horizon
        self.obs_mean = Stat(jnp.zeros((S,)))
        self.obs_std = Stat(jnp.ones((S,)))
        self.delta_std = Stat(jnp.ones((S,)))            # scale of s_{t+k} - s_t in normalised units
        self.delta_bound = Stat(jnp.full((F * S,), 10.0))  # |delta / delta_std| range in the data, per (k, dim)
        self.value_mean = Stat(jnp.zeros(()))
        self.value_std = Stat(jnp.ones(()))
        self.proposal = Denoiser(F * A, H * S, dims, rngs)
        if dims.dynamics_arch not in DYNAMICS_ARCHS:
            raise ValueError(f"dynamics_arch must be one of {DYNAMICS_ARCHS}, got {dims.dynamics_arch!r}.")
        self.dynamics = (StepDenoiser(dims, rngs) if dims.dynamics_arch == "dit"
                         else Denoiser(F * S, H * S + F * A, dims, rngs))
        self.value = MLPEnsemble(S + F * S + F * A, 1, dims.hidden, dims.depth, dims.ensemble, rngs)
        self.onestep = MLPEnsemble(S + A, S, dims.hidden, dims.depth, dims.ensemble, rngs)
        self.gaussian = ResidualMLP(H * S, 2 * F * A, dims.hidden, dims.depth, rngs)
        self.bc = ResidualMLP(H * S, A, dims.hidden, dims.depth, rngs)

    # ------------------------------------------------------------------ normalisation (raw <-> model units)
    def norm(self, obs: jax.Array) -> jax.Array:
        return (obs - self.obs_mean[...]) / self.obs_std[...]

    def denorm(self, x: jax.Array) -> jax.Array:
        return x * self.obs_std[...] + self.obs_mean[...]

    def history_cond(self, history: jax.Array) -> jax.Array:
        """history [B, H, S] raw -> [B, H * S] normalised."""
        return self.norm(history).reshape(history.shape[0], -1)

    # ------------------------------------------------------------------ deterministic heads
    def member_values(self, obs: jax.Array, future: jax.Array, actions: jax.Array) -> jax.Array:
        """Every member's J in return units: obs [B, S], future [B, F, S], actions [B, F, A] (raw) -> [M, B]."""
        B = obs.shape[0]
        x = jnp.concatenate([self.norm(obs), self.norm(future).reshape(B, -1), actions.reshape(B, -1)], -1)
        return self.value(x)[..., 0].astype(jnp.float32) * self.value_std[...] + self.value_mean[...]

    def values(self, obs: jax.Array, future: jax.Array, actions: jax.Array, pessimism: float = 0.0) -> jax.Array:
        """J [B]: the members' mean minus `pessimism` times their standard deviation (a lower confidence bound
        that penalises what the members disagree on, i.e. what the data did not pin down)."""
        members = self.member_values(obs, future, actions)
        if isinstance(pessimism, (int, float)) and not pessimism:
            return members.mean(0)
        return members.mean(0) - pessimism * members.std(0)     # a traced 0 gives the mean exactly too

    def onestep_next(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        """The ensemble's mean one-step prediction."""
        delta = self.onestep(jnp.concatenate([self.norm(obs), action], -1)).astype(jnp.float32).mean(0)
        return self.denorm(self.norm(obs) + delta * self.delta_std[...])

    def bc_action(self, history: jax.Array) -> jax.Array:
        return jnp.tanh(self.bc(self.history_cond(history)).astype(jnp.float32))

    def gaussian_params(self, history: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = self.gaussian(self.history_cond(history)).astype(jnp.float32)
        mean, log_std = jnp.split(out, 2, -1)
        return jnp.tanh(mean), jnp.clip(log_std, -5.0, 1.0)


def _member_mse(errors: jax.Array, key: jax.Array, bootstrap: bool) -> jax.Array:
    """errors [M, B, ...] -> the mean over members of each member's MSE; with `bootstrap` and M > 1 each member
    weights the batch's samples by its own Poisson(1) draws (the online bootstrap), so members see different
    resamples of the data rather than differing by their init alone."""
    per_sample = errors.reshape(errors.shape[0], errors.shape[1], -1).mean(-1)          # [M, B]
    if not bootstrap or errors.shape[0] == 1:
        return per_sample.mean()
    weights = jax.random.poisson(key, 1.0, per_sample.shape).astype(per_sample.dtype)
    return jnp.mean(jnp.sum(weights * per_sample, 1) / jnp.maximum(jnp.sum(weights, 1), 1.0))


def segment_losses(model: DMPCModels, batch: dict, key: jax.Array, schedule: diffusion.NoiseSchedule,
                   bootstrap: bool = True) -> dict:
    """Per-head losses on a batch of segments: history [B, H, S], actions [B, F, A], future [B, F, S],
    value_target [B] (raw units). `bootstrap=False` (held-out evaluation) weights every sample once."""
    F, S, A = model.dims.horizon, model.dims.obs_dim, model.dims.action_dim
    history, actions, future = batch["history"], batch["actions"], batch["future"]
    B = history.shape[0]
    obs = history[:, -1]
    cond = model.history_cond(history)
    flat_actions = actions.reshape(B, F * A)
    delta = ((model.norm(future) - model.norm(obs)[:, None]) / model.delta_std[...]).reshape(B, F * S)
    k_prop, k_dyn, k_value, k_onestep = jax.random.split(key, 4)
    losses = {
        "proposal": diffusion.denoising_loss(model.proposal, schedule, flat_actions, cond, k_prop,
                                             prediction=model.dims.prediction),
        "dynamics": diffusion.denoising_loss(model.dynamics, schedule, delta,
                                             jnp.concatenate([cond, flat_actions], -1), k_dyn,
                                             prediction=model.dims.prediction),
    }
    predicted = model.member_values(obs, future, actions)                                # [M, B]
    losses["value"] = _member_mse(jnp.square((predicted - batch["value_target"]) / model.value_std[...]), k_value,
                                  bootstrap)
    one_delta = model.onestep(jnp.concatenate([model.norm(obs), actions[:, 0]], -1)).astype(jnp.float32)
    losses["onestep"] = _member_mse(jnp.square(one_delta - delta[:, :S]), k_onestep, bootstrap)   # [M, B, S]
    mean, log_std = model.gaussian_params(history)
    losses["gaussian"] = jnp.mean(0.5 * jnp.square((flat_actions - mean) / jnp.exp(log_std)) + log_std)
    losses["bc"] = jnp.mean(jnp.square(model.bc_action(history) - actions[:, 0]))
    return losses


def make_loss_fn(schedule: diffusion.NoiseSchedule, weights: dict[str, float] | None = None):
    """`loss_fn(model, batch, rng) -> (loss, metrics)` for core.train; `weights` (default all 1) selects heads,
    e.g. {"dynamics": 1.0} fine-tunes only the dynamics."""
    def loss_fn(model, batch, rng):
        losses = segment_losses(model, batch, rng, schedule)
        w = weights or {name: 1.0 for name in losses}
        total = sum(w.get(name, 0.0) * value for name, value in losses.items())
        return total, losses
    return loss_fn


HEADS = ("proposal", "dynamics", "value", "onestep", "gaussian", "bc")    # segment_losses' keys = module names


class HeadSelector:
    """Early stopping per head on held-out segments. `eval_fn` (core.train's hook) scores every head's loss on
    one fixed held-out batch (fixed noise key, so evaluations differ by the parameters alone) and keeps each
    head's parameters from its best evaluation; `apply(model)` writes them into `model`. The heads share no
    parameters, so their best steps may differ."""

    def __init__(self, held_out: dict, schedule: diffusion.NoiseSchedule, key: jax.Array,
                 save_path: str | None = None, save_every: int = 0):
        """`save_path`: the record is written there at every multiple of `save_every` (the trainer's checkpoint
        steps, so it matches a checkpoint) and read back at construction, so a resumed run keeps it."""
        self.held_out = jax.tree.map(jnp.asarray, held_out)
        self.best: dict[str, tuple[float, int, object]] = {}    # head -> (loss, step, host copy of its state)
        self.curves: dict[str, list[tuple[int, float]]] = {h: [] for h in HEADS}
        self.save_path, self.save_every = save_path, save_every
        if save_path and os.path.exists(save_path):
            with open(save_path, "rb") as f:
                self.best, self.curves = pickle.load(f)
        self._losses = jax.jit(lambda graphdef, state, batch: segment_losses(nnx.merge(graphdef, state), batch, key,
                                                                             schedule, bootstrap=False),
                               static_argnums=0)

    def eval_fn(self, model: DMPCModels, step: int) -> dict:
        losses = {k: float(v) for k, v in self._losses(*nnx.split(model), self.held_out).items()}
        for head in HEADS:
            # a resumed run re-evaluates the steps after its checkpoint: those points are replaced, not doubled
            self.curves[head] = [c for c in self.curves[head] if c[0] < step] + [(step, losses[head])]
            if head not in self.best or losses[head] < self.best[head][0]:
                # a host copy: the trainer donates the live buffers to its next step
                self.best[head] = (losses[head], step, jax.device_get(nnx.state(getattr(model, head))))
        if self.save_path and self.save_every and step % self.save_every == 0:
            with fileio.atomic_path(self.save_path) as tmp, open(tmp, "wb") as f:
                pickle.dump((self.best, self.curves), f)
        return {f"held_out_{k}": v for k, v in losses.items()}

    def apply(self, model: DMPCModels) -> dict:
        """Loads each head's best parameters into `model`; returns {head: {best_step, best_loss, last_loss}}."""
        for head, (_, _, state) in self.best.items():
            nnx.update(getattr(model, head), jax.tree.map(jnp.asarray, state))
        return {head: {"best_step": self.best[head][1], "best_loss": self.best[head][0],
                       "last_step": self.curves[head][-1][0], "last_loss": self.curves[head][-1][1]}
                for head in self.best}


class SeedHeadSelectors:
    """One HeadSelector per training seed of a model trained with core.train's `train.members`: core.train's
    eval hook sees the stacked model; each seed's heads are scored and kept on their own. The logged losses
    are the seeds' means."""

    def __init__(self, selectors: list[HeadSelector]):
        self.selectors = selectors

    def eval_fn(self, model: DMPCModels, step: int) -> dict:
        if len(self.selectors) == 1:
            return self.selectors[0].eval_fn(model, step)
        rows = [s.eval_fn(train_lib.member_model(model, i), step) for i, s in enumerate(self.selectors)]
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def set_statistics(model: DMPCModels, stats: dict) -> None:
    """Writes data statistics (from `segments.statistics`) into the model's Stat variables."""
    for name in ("obs_mean", "obs_std", "delta_std", "delta_bound", "value_mean", "value_std"):
        getattr(model, name)[...] = jnp.asarray(stats[name], jnp.float32)


def save_params(model: DMPCModels, path: str) -> None:
    """Every variable of the model (weights and data statistics) to one .npz, atomically: small enough to carry
    between GPU commands, unlike a training checkpoint with its optimiser state."""
    leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model)))[0]
    arrays = {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}
    with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_params(model: DMPCModels, path: str) -> DMPCModels:
    """Fills `model` (built with the same ModelDims) from `save_params`' file; a file of another shape is one
    ValueError."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"No saved D-MPC model at {path}; run the evaluate stage first.")
    state = nnx.state(model)
    pure = nnx.to_pure_dict(state)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(pure)
    with np.load(path) as saved:
        names = [jax.tree_util.keystr(p) for p, _ in leaves]
        if sorted(saved.files) != sorted(names) or any(saved[n].shape != v.shape for n, (_, v) in zip(names, leaves)):
            raise ValueError(f"{path} holds a model of another shape; rerun the evaluate stage with this config.")
        values = [jnp.asarray(saved[n]) for n in names]
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, values))
    nnx.update(model, state)
    return model
