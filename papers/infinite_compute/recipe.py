"""Training many small LMs as ONE vmapped program: per-member hyperparameters, data order and data mixture.

A *point* is one training run: (size, lr, wd, epochs, seed, recipe) plus an optional real:synthetic mixture.
Points of one model size are trained M at a time by `core.ensemble.make_ensemble_step` (the one train step of
core.train under vmap) inside a `lax.scan` over steps, so a group costs one dispatch per chunk of steps:

  * hyperparameters live in the optimizer state (`MemberSchedule`), one value per member, so members with
    different lr, wd and step counts share the compiled program; past its own last step a member's learning
    rate is 0, which also zeroes its (decoupled) weight decay, so it stays where it finished;
  * the whole D-token train set sits on device; each member draws its batches there, from its own
    permutation of the windows per epoch (keyed by its data seed) and optionally from its own slice of a
    synthetic-window pool (`batch_indices`), so no host input pipeline runs at all.

Results are stored as they finish (`PointStore`: one JSON per point + one orbax checkpoint of its params), so
a sweep that is interrupted resumes without redoing finished points.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import time
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from core import checkpoint as checkpoint_lib
from core import ensemble
from core import fileio
from core import lm
from core import train as train_lib
from core.nn import transformer as tfm


# ----------------------------------------------------------------------------------------------- points

@dataclasses.dataclass(frozen=True)
class Point:
    size: str
    recipe: str                   # standard | regularized | ensemble | data_law | distill
    learning_rate: float
    weight_decay: float
    epochs: float                 # passes over the real data
    seed: int = 0                 # init, train key and data order (the paper ties them: train = data seed)
    train_tokens: int = 0         # 0: the whole D-token set; else a prefix of it (data-law points)
    synthetic: str = ""           # name of a synthetic pool ("" = real data only)
    synthetic_fraction: float = 0.0   # share of each batch drawn from the synthetic pool
    total_steps: int = 0          # 0: from epochs; distillation students fix it (real epochs follow)

    @property
    def id(self) -> str:
        parts = [self.size, self.recipe, f"lr{self.learning_rate:g}", f"wd{self.weight_decay:g}",
                 f"e{self.epochs:g}", f"s{self.seed}"]
        if self.train_tokens:
            parts.append(f"d{self.train_tokens}")
        if self.synthetic:
            parts.append(f"{self.synthetic}{self.synthetic_fraction:g}")
        return "_".join(parts)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def model_config(size: dict, vocab_size: int, seq_len: int) -> tfm.TransformerConfig:
    """Llama blocks, untied embeddings (as in the paper), full multi-head attention; sampling (distillation)
    uses the jnp cached attention, which takes any head_dim."""
    return tfm.TransformerConfig(
        vocab_size=vocab_size, d_model=size["d_model"], n_layers=size["n_layers"], n_heads=size["n_heads"],
        n_kv_heads=size["n_heads"], head_dim=size["head_dim"], mlp_dim=size["mlp_dim"], max_seq_len=seq_len + 1,
        tie_embeddings=False, attention_impl="xla", cache_attention="reference")


def non_embedding_params(cfg: tfm.TransformerConfig) -> int:
    """The paper's N: every parameter except the input embedding and the output head."""
    return tfm.param_count(cfg) - cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)


def flops_per_token(cfg: tfm.TransformerConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (non-embedding params + output head) + causal attention scores."""
    matmul = non_embedding_params(cfg) + cfg.vocab_size * cfg.d_model
    return 6.0 * matmul + 6.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


# ------------------------------------------------------------------------------------------- optimizer

class MemberSchedule(NamedTuple):
    """Per-member hyperparameters (scalars, stacked to [M] by the ensemble) and the step count."""
    count: jax.Array
    peak_lr: jax.Array
    weight_decay: jax.Array
    warmup_steps: jax.Array
    total_steps: jax.Array


def member_learning_rate(state: MemberSchedule) -> jax.Array:
    """Linear warmup, cosine decay to 0 at total_steps (the paper's min_lr_ratio=0), 0 afterwards."""
    step = state.count.astype(jnp.float32)
    warmup = jnp.maximum(state.warmup_steps.astype(jnp.float32), 1.0)
    total = jnp.maximum(state.total_steps.astype(jnp.float32), warmup + 1.0)
    progress = jnp.clip((step - warmup) / (total - warmup), 0.0, 1.0)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    lr = state.peak_lr * jnp.where(step < warmup, (step + 1.0) / warmup, cosine)
    return jnp.where(step < total, lr, 0.0)


def scale_by_member_schedule() -> optax.GradientTransformation:
    """AdamW's last two stages with hyperparameters read from the state: u -> -lr_t (u + wd p) on matrices."""

    def init(params):
        del params
        zero = jnp.zeros((), jnp.float32)
        return MemberSchedule(jnp.zeros((), jnp.int32), zero, zero, zero, zero)

    def update(updates, state, params):
        lr = member_learning_rate(state)
        decay = lambda u, p: u + state.weight_decay * p if jnp.ndim(p) > 1 else u   # no decay on norms
        updates = jax.tree.map(lambda u, p: -lr * decay(u, p), updates, params)
        return updates, state._replace(count=state.count + 1)

    return optax.GradientTransformation(init, update)


def make_member_optimizer(optim) -> optax.GradientTransformation:
    """clip -> Adam -> per-member schedule and decoupled weight decay (optax.adamw with state hyperparams)."""
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip),
                       optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps),
                       scale_by_member_schedule())


def set_member_hyperparams(states: train_lib.TrainState, **values: np.ndarray) -> train_lib.TrainState:
    """Writes per-member arrays [M] into the stacked MemberSchedule fields (peak_lr, weight_decay, ...)."""
    return dataclasses.replace(states, opt_state=optax.tree_utils.tree_set(
        states.opt_state, **{k: jnp.asarray(v) for k, v in values.items()}))


# ------------------------------------------------------------------------------------------------ data

class MemberData(NamedTuple):
    """How one member draws batches from windows = [real (num_real) ; synthetic pool]."""
    key: jax.Array                # data-order key
    real_per_batch: jax.Array     # int32: batch rows from real windows; the rest come from synthetic
    num_real: jax.Array           # int32: real windows this member may use (a prefix: data-law points)
    synthetic_start: jax.Array    # int32: its slice of the synthetic pool (offset into `windows`)
    synthetic_count: jax.Array    # int32


def _epoch_permutation(key, epoch, count, capacity):
    """A random order of [0, count) (count may be traced) as the first `count` entries of capacity slots."""
    scores = jax.random.uniform(jax.random.fold_in(key, epoch), (capacity,))
    scores = jnp.where(jnp.arange(capacity) < count, scores, 2.0)
    return jnp.argsort(scores)


def _stream_indices(key, position, count, capacity):
    """Index of element `position` of an endless stream: epoch-wise reshuffled passes over [0, count)."""
    epoch, offset = position // count, position % count
    first, second = jnp.min(epoch), jnp.min(epoch) + 1     # a batch spans at most two epochs
    perm_a = _epoch_permutation(key, first, count, capacity)
    perm_b = _epoch_permutation(key, second, count, capacity)
    return jnp.where(epoch == first, perm_a[offset], perm_b[offset])


def batch_indices(data: MemberData, step: jax.Array, batch_size: int, real_capacity: int,
                  synthetic_capacity: int) -> jax.Array:
    """int32[batch_size] window indices of one member's batch at `step`; a pure function of (data, step).

    Rows [0, real_per_batch) continue the member's real stream (every real window once per real epoch), the
    other rows continue its synthetic stream; both are reshuffled each pass, keyed by the member's data key.
    """
    rows = jnp.arange(batch_size)
    real_key, synthetic_key = jax.random.split(data.key)
    real_pos = step * data.real_per_batch + rows
    index = _stream_indices(real_key, real_pos, jnp.maximum(data.num_real, 1), real_capacity)
    if synthetic_capacity:
        synthetic_per_batch = batch_size - data.real_per_batch
        synthetic_pos = step * synthetic_per_batch + rows - data.real_per_batch
        synthetic = data.synthetic_start + _stream_indices(
            synthetic_key, jnp.maximum(synthetic_pos, 0), jnp.maximum(data.synthetic_count, 1), synthetic_capacity)
        index = jnp.where(rows < data.real_per_batch, index, synthetic)
    return index.astype(jnp.int32)


# -------------------------------------------------------------------------------------- group training

@dataclasses.dataclass
class GroupProgram:
    """The compiled pieces for one model size and member count: init, train chunk, evaluations."""
    cfg: tfm.TransformerConfig
    members: int
    optimizer: optax.GradientTransformation
    graphdef: nnx.GraphDef
    train_chunk: Any
    eval_members: Any
    eval_subsets: Any


def make_group_program(cfg: tfm.TransformerConfig, members: int, optim, batch_size: int, real_capacity: int,
                       synthetic_capacity: int, chunk_steps: int, eval_batch: int,
                       compute_dtype=jnp.bfloat16) -> GroupProgram:
    optimizer = make_member_optimizer(optim)
    graphdef = nnx.graphdef(tfm.Transformer(cfg, rngs=nnx.Rngs(0)))
    step = ensemble.make_ensemble_step(graphdef, lm.next_token_loss, optimizer, compute_dtype, shared_batch=False)
    draw = jax.vmap(functools.partial(batch_indices, batch_size=batch_size, real_capacity=real_capacity,
                                      synthetic_capacity=synthetic_capacity), in_axes=(0, None))

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_chunk(states, data: MemberData, windows, start):
        def body(states, offset):
            batch = {"tokens": windows[draw(data, start + offset)]}          # [M, B, L + 1]
            states, metrics = step(states, batch)
            return states, metrics["loss"]
        return jax.lax.scan(body, states, jnp.arange(chunk_steps))

    def member_logits(states, tokens):
        def one(state):
            return train_lib.merge_model(graphdef, state, compute_dtype)(tokens[:, :-1]).astype(jnp.float32)
        return jax.vmap(one)(states)                                          # [M, B, L, V]

    def _batches(windows):
        usable = (windows.shape[0] // eval_batch) * eval_batch
        return windows[:usable].reshape(-1, eval_batch, windows.shape[1])

    @jax.jit
    def eval_members(states, windows):
        """Mean next-token NLL of each member over `windows`: [M]."""
        def body(total, tokens):
            logits = member_logits(states, tokens)
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[None, :, 1:])
            return total + nll.sum((1, 2)), None
        total, _ = jax.lax.scan(body, jnp.zeros((members,)), _batches(windows))
        return total / (_batches(windows).shape[0] * eval_batch * (windows.shape[1] - 1))

    @jax.jit
    def eval_subsets(states, windows, masks):
        """NLL of the logit-averaged ensemble of each member subset masks[S, M] (the paper's ensemble)."""
        weights = masks / masks.sum(1, keepdims=True)

        def body(total, tokens):
            logits = member_logits(states, tokens)
            def subset(w):
                log_probs = ensemble.logit_averaged_log_probs(logits, w)
                return -jnp.take_along_axis(log_probs, tokens[:, 1:, None], -1).sum()
            return total + jax.lax.map(subset, weights), None
        total, _ = jax.lax.scan(body, jnp.zeros((masks.shape[0],)), _batches(windows))
        return total / (_batches(windows).shape[0] * eval_batch * (windows.shape[1] - 1))

    return GroupProgram(cfg=cfg, members=members, optimizer=optimizer, graphdef=graphdef,
                        train_chunk=train_chunk, eval_members=eval_members, eval_subsets=eval_subsets)


def init_states(program: GroupProgram, seeds: Sequence[int]) -> train_lib.TrainState:
    """Member i initialised from seed i alone, so a point's run does not depend on its group."""
    keys = [jax.random.key(int(s)) for s in seeds]
    return ensemble.init_members(lambda rngs: tfm.Transformer(program.cfg, rngs=rngs), program.optimizer, keys)


def steps_for(point: Point, num_real: int, batch_size: int) -> int:
    if point.total_steps:
        return int(point.total_steps)
    real_per_batch = batch_size - round(batch_size * point.synthetic_fraction)
    return max(1, int(round(point.epochs * num_real / real_per_batch)))


def train_group(program: GroupProgram, points: Sequence[Point], windows: jax.Array, num_real: int,
                synthetic_slices: dict[str, tuple[int, int]], batch_size: int, seq_len: int, chunk_steps: int,
                warmup_fraction: float) -> tuple[train_lib.TrainState, dict]:
    """Trains len(points) == program.members points together; returns (states, info)."""
    if len(points) != program.members:
        raise ValueError(f"A group holds exactly {program.members} points, got {len(points)}.")
    usable = [real_windows(p, num_real, seq_len) for p in points]
    steps = np.asarray([steps_for(p, n, batch_size) for p, n in zip(points, usable)])
    states = init_states(program, [p.seed for p in points])
    states = set_member_hyperparams(
        states, peak_lr=np.asarray([p.learning_rate for p in points], np.float32),
        weight_decay=np.asarray([p.weight_decay for p in points], np.float32),
        warmup_steps=np.maximum(1, np.round(steps * warmup_fraction)).astype(np.float32),
        total_steps=steps.astype(np.float32))
    real_per_batch = [batch_size - round(batch_size * p.synthetic_fraction) for p in points]
    slices = [synthetic_slices.get(p.synthetic, (0, 0)) for p in points]
    data = MemberData(
        key=jnp.stack([jax.random.fold_in(jax.random.key(p.seed), 1) for p in points]),
        real_per_batch=jnp.asarray(real_per_batch, jnp.int32),
        num_real=jnp.asarray(usable, jnp.int32),
        synthetic_start=jnp.asarray([s[0] for s in slices], jnp.int32),
        synthetic_count=jnp.asarray([s[1] for s in slices], jnp.int32))
    start_time = time.perf_counter()
    total = int(steps.max())
    losses = []
    for start in range(0, total, chunk_steps):
        states, chunk_losses = program.train_chunk(states, data, windows, jnp.asarray(start, jnp.int32))
        losses.append(chunk_losses)
    losses = np.asarray(jnp.concatenate(losses))[:total]           # [steps, M]
    final_train = [float(losses[min(s, total) - 1, i]) for i, s in enumerate(steps)]
    # A diverging member (too high an lr in the search) has its non-finite updates skipped by the core step;
    # it is recorded, not fatal, so one bad grid point cannot stop the sweep.
    nonfinite = [int((~np.isfinite(losses[: s, i])).sum()) for i, s in enumerate(steps)]
    return states, dict(steps=steps.tolist(), train_loss=final_train, nonfinite_steps=nonfinite,
                        seconds=time.perf_counter() - start_time,
                        chunk_steps=chunk_steps, scheduled_steps=int(np.ceil(total / chunk_steps) * chunk_steps))


def real_windows(point: Point, num_real: int, seq_len: int) -> int:
    """Real windows a point trains on: all of them, or those of its token prefix (data-law points)."""
    return num_real if not point.train_tokens else min(num_real, max(1, (point.train_tokens - 1) // seq_len))


def subset_masks(members: int) -> np.ndarray:
    """Every non-empty subset of members as a 0/1 mask [2^M - 1, M], ordered by size."""
    subsets = [c for k in range(1, members + 1) for c in itertools.combinations(range(members), k)]
    masks = np.zeros((len(subsets), members), np.float32)
    for row, subset in enumerate(subsets):
        masks[row, list(subset)] = 1.0
    return masks


# ------------------------------------------------------------------------------------------------ store

class PointStore:
    """workdir/points/<id>.json and <checkpoint_dir>/<id>/ (orbax, params only), written as they finish."""

    def __init__(self, workdir: str, checkpoint_dir: str | None = None):
        self.workdir = workdir
        self.checkpoint_dir = checkpoint_dir or os.path.join(workdir, "checkpoints")
        os.makedirs(os.path.join(workdir, "points"), exist_ok=True)
        self._pending: list[checkpoint_lib.Checkpointer] = []

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, "points", f"{name}.json")

    def has(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def get(self, name: str) -> dict | None:
        if not self.has(name):
            return None
        with open(self.path(name), encoding="utf-8") as f:
            return json.load(f)

    def put(self, name: str, record: dict) -> None:
        fileio.write_text_atomic(self.path(name), json.dumps(record, indent=1, sort_keys=True))

    def all(self) -> list[dict]:
        names = sorted(n[:-5] for n in os.listdir(os.path.join(self.workdir, "points")) if n.endswith(".json"))
        return [self.get(n) for n in names]

    def save_params(self, name: str, params: Any, step: int) -> None:
        ckpt = checkpoint_lib.Checkpointer(os.path.join(self.checkpoint_dir, name), keep=1)
        ckpt.save(step, params, force=True)
        self._pending.append(ckpt)

    def load_params(self, name: str, target: Any) -> Any:
        with checkpoint_lib.Checkpointer(os.path.join(self.checkpoint_dir, name), keep=1) as ckpt:
            return ckpt.restore(target)

    def flush(self) -> None:
        for ckpt in self._pending:
            ckpt.close()
        self._pending.clear()
