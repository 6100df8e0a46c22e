"""The one trainer: a pure jitted step built from a paper's loss, and a loop with checkpoints and metrics.

A paper supplies `loss_fn(model, batch, rng) -> (loss, metrics)` and batches; everything else (optax
optimizer and schedule, clipping, bf16 compute over f32 params, sharding, resume, logging) lives here.
Ensembles run the same step under `jax.vmap` over a leading member axis of the state.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from core import checkpoint as checkpoint_lib
from core import errors
from core import metrics as metrics_lib
from core import sharding as sharding_lib
from core import workdir as workdir_lib
from core.precision import cast_floating

LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    step: jax.Array            # int32 scalar
    params: nnx.State          # trainable nnx.Param leaves, f32
    model_state: nnx.State     # every other variable (BatchNorm stats, ...)
    opt_state: Any
    rng: jax.Array             # the *train* key; data order has its own seed
    # train.ema_decay > 0: an exponential moving average of params (what eval and inference use, as diffusion
    # models are usually evaluated); None otherwise, so states without it keep their checkpoint layout
    ema_params: Any = None


def optim_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Defaults for the `optim` config section."""
    defaults = dict(name="adamw", learning_rate=3e-4, end_learning_rate_fraction=0.1, weight_decay=0.1,
                    warmup_steps=100, total_steps=1000, grad_clip=1.0, b1=0.9, b2=0.95, eps=1e-8)
    defaults.update(overrides)
    return ml_collections.ConfigDict(defaults)


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    warmup = max(1, min(int(config.warmup_steps), int(config.total_steps) - 1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
        decay_steps=max(int(config.total_steps), warmup + 1),
        end_value=config.learning_rate * config.end_learning_rate_fraction)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW / Adam / SGD with warmup-cosine and global-norm clipping; decay skips vectors (norms, biases).
    `flatten` (optional key): the update runs on all parameters raveled into one vector (optax.flatten)."""
    schedule = make_schedule(config)
    decay_mask = lambda params: jax.tree.map(lambda p: np.ndim(p) > 1, params)
    if config.name == "adamw":
        opt = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                          weight_decay=config.weight_decay, mask=decay_mask)
    elif config.name == "adam":
        opt = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)
    elif config.name == "sgd":
        opt = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
                          optax.sgd(schedule, momentum=config.b1))
    else:
        raise ValueError(f"Unknown optimizer {config.name!r}; use adamw, adam or sgd.")
    if config.grad_clip and config.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(config.grad_clip), opt)
    if config.get("flatten", False):
        # One vector instead of one update per parameter leaf: for small models (many leaves, tiny tensors) the
        # optimizer's per-leaf kernels are a large share of a step. Elementwise updates are unchanged; the
        # shape-based decay mask would see one vector, so decay is refused rather than silently dropped.
        if config.name != "adam" and config.weight_decay:
            raise ValueError(f"optim.flatten works with optimizer 'adam' or weight_decay 0 (the decay mask "
                             f"selects matrices by shape); got {config.name!r} with weight_decay "
                             f"{config.weight_decay}.")
        opt = optax.flatten(opt)
    return opt


def init_train_state(model: nnx.Module, optimizer: optax.GradientTransformation, rng: jax.Array,
                     mesh: jax.sharding.Mesh | None = None, members: int = 1,
                     ema: bool = False) -> tuple[nnx.GraphDef, TrainState]:
    """Splits the model and builds the state; with a mesh, params are placed by their logical names. `ema`:
    the state carries an average of the params, starting at them (train.ema_decay).

    members > 1: `model` is `stack_models` of that many independent models and `rng` a stack of as many keys;
    every field of the state gets a leading member axis and is replicated over the mesh."""
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    if members > 1:
        leading = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves((params, model_state))}
        if leading != {members} or np.shape(jax.random.key_data(rng))[0] != members:
            raise ValueError(f"train.members={members} needs a model from core.train.stack_models of {members} "
                             f"models and {members} train keys; got leading axes {sorted(map(str, leading))}.")
        state = TrainState(step=jnp.zeros((members,), jnp.int32), params=params, model_state=model_state,
                           opt_state=jax.vmap(optimizer.init)(params), rng=rng,
                           ema_params=jax.tree.map(jnp.copy, params) if ema else None)
        if mesh is not None:
            state = _place(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        return graphdef, state
    if mesh is not None:
        params = _place(params, sharding_lib.state_shardings(params, mesh))
        model_state = _place(model_state, sharding_lib.state_shardings(model_state, mesh))
        opt_shardings = _like_params(jax.eval_shape(optimizer.init, params), params, mesh)
        opt_state = jax.jit(optimizer.init, out_shardings=opt_shardings)(params)
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        step = _place(jnp.zeros((), jnp.int32), replicated)
        rng = _place(rng, replicated)
    else:
        opt_state = optimizer.init(params)
        step = jnp.zeros((), jnp.int32)
    return graphdef, TrainState(step=step, params=params, model_state=model_state, opt_state=opt_state, rng=rng,
                                ema_params=jax.tree.map(jnp.copy, params) if ema else None)


def _place(tree: Any, shardings: Any) -> Any:
    """Puts host-identical values onto a (possibly multi-process) mesh; device_put needs addressable devices."""
    return jax.jit(lambda t: t, out_shardings=shardings)(tree)


def _like_params(tree: Any, params: Any, mesh: jax.sharding.Mesh) -> Any:
    """Shardings for optimizer state: a leaf mirroring a param (Adam's mu, nu) is sharded like it."""
    by_path = {jax.tree_util.keystr(p): leaf.sharding for p, leaf in jax.tree_util.tree_leaves_with_path(params)}
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def sharding_for(path, leaf):
        key = jax.tree_util.keystr(path)
        matches = [k for k in by_path if key.endswith(k) and by_path[k].shard_shape(leaf.shape) is not None]
        return by_path[max(matches, key=len)] if matches else replicated
    return jax.tree_util.tree_map_with_path(sharding_for, tree)


def merge_model(graphdef: nnx.GraphDef, state: TrainState, dtype: Any = None, raw: bool = False) -> nnx.Module:
    """The nnx module for eval or inference (optionally with params cast, e.g. to bf16): the params' moving
    average when the state keeps one (train.ema_decay), unless `raw`."""
    params = state.params if raw or state.ema_params is None else state.ema_params
    return nnx.merge(graphdef, cast_floating(params, dtype), state.model_state)


def stack_models(models: list[nnx.Module]) -> nnx.Module:
    """Independent models of one architecture as one module whose every variable has a leading member axis:
    what `train` takes with `train.members` = len(models). `member_model` takes one back out."""
    graphdef, *_ = nnx.split(models[0])
    states = [nnx.state(m) for m in models]
    return nnx.merge(graphdef, jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *states))


def member_model(stacked: nnx.Module, index: int) -> nnx.Module:
    """Member `index` of a `stack_models` module (or of a model trained with `train.members`)."""
    graphdef, state = nnx.split(stacked)
    return nnx.merge(graphdef, jax.tree.map(lambda x: x[index], state))


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, optimizer: optax.GradientTransformation,
                    compute_dtype: Any = jnp.bfloat16, donate: bool = True, steps_per_call: int = 1,
                    members: int = 1, ema_decay: float = 0.0) -> Callable:
    """Returns jitted `step(state, batch) -> (state, metrics)`.

    Params stay f32; the loss sees them cast to `compute_dtype` and gradients flow back through the cast.
    A non-finite loss or gradient leaves the state unchanged and is reported in `metrics["nonfinite"]`, so
    the loop can stop with a clear error before anything bad is checkpointed.

    steps_per_call > 1: `step(state, batches)` takes that many batches stacked on a leading axis and runs them
    as a `lax.scan` in one program, for small models whose step is shorter than the host's per-call work
    (pytree flattening, dispatch, batch transfer). Metrics are the last step's; "nonfinite" is any step's.

    members > 1: independent runs in one program (the state from `init_train_state(..., members=)`, every batch
    leaf [batch, members, ...], so the batch axis stays first for the mesh): the whole step, optimizer and
    gradient clipping included, is vmapped, so member i follows exactly the run it would have alone. Metrics
    are member means; "nonfinite" is any member's.

    ema_decay > 0 (the state from `init_train_state(..., ema=True)`): after each update,
    ema <- decay * ema + (1 - decay) * params.
    """
    if steps_per_call < 1:
        raise ValueError(f"train.steps_per_call must be >= 1, got {steps_per_call}.")
    one_step = train_step_fn(graphdef, loss_fn, optimizer, compute_dtype, ema_decay)
    if members > 1:
        one_step = vmap_members(one_step)
    if steps_per_call == 1:
        return jax.jit(one_step, donate_argnums=(0,) if donate else ())

    def steps(state: TrainState, batches: Any) -> tuple[TrainState, dict]:
        state, metrics = jax.lax.scan(one_step, state, batches)
        last = jax.tree.map(lambda m: m[-1], metrics)
        return state, {**last, "nonfinite": jnp.any(metrics["nonfinite"])}

    return jax.jit(steps, donate_argnums=(0,) if donate else ())


def vmap_members(step: Callable, batch_axis: int | None = 1, reduce_metrics: bool = True) -> Callable:
    """A train step over a stacked state (leading member axis), every member on its own slice of the batch
    (`batch_axis`) or all on the same batch (None). Metrics are member means ("nonfinite": any member's), or
    per member [M] with reduce_metrics=False."""
    def members_step(state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        state, metrics = jax.vmap(step, in_axes=(0, batch_axis))(state, batch)
        if reduce_metrics:
            metrics = {k: jnp.any(v) if k == "nonfinite" else jnp.mean(v) for k, v in metrics.items()}
        return state, metrics
    return members_step


def train_step_fn(graphdef: nnx.GraphDef, loss_fn: LossFn, optimizer: optax.GradientTransformation,
                  compute_dtype: Any = jnp.bfloat16, ema_decay: float = 0.0) -> Callable:
    """The un-jitted `step(state, batch) -> (state, metrics)` of `make_train_step`, to compose (vmap, scan)."""

    def step(state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)

        def compute_loss(params, model_state):
            # Fresh Variable objects at this trace level, so BatchNorm-style mutations are allowed.
            model_state = jax.tree.map(jnp.asarray, model_state)
            model = nnx.merge(graphdef, cast_floating(params, compute_dtype), model_state)
            loss, aux = loss_fn(model, batch, rng)
            new_model_state = nnx.state(model, nnx.Not(nnx.Param))
            return loss.astype(jnp.float32), (aux, new_model_state)

        (loss, (aux, new_model_state)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
            state.params, state.model_state)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_model_state = jax.tree.map(lambda n, o: n.astype(o.dtype), new_model_state, state.model_state)
        ema_params = state.ema_params
        if ema_params is not None:
            ema_params = keep(jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema_params, params),
                              ema_params)
        new_state = TrainState(
            step=state.step + 1,
            params=keep(params, state.params),
            model_state=keep(new_model_state, state.model_state),
            opt_state=keep(opt_state, state.opt_state),
            rng=state.rng,
            ema_params=ema_params)
        metrics = {"loss": loss, "grad_norm": grad_norm, "nonfinite": ~finite,
                   **{k: jnp.asarray(v, jnp.float32) for k, v in dict(aux).items()}}
        return new_state, metrics

    return step


@dataclasses.dataclass
class TrainSetup:
    """Everything a training loop needs, built from (config, model, loss) by `setup_training`."""
    graphdef: nnx.GraphDef
    state: TrainState
    step_fn: Callable            # jitted step(state, batch) -> (state, metrics), state donated
    mesh: jax.sharding.Mesh
    optimizer: optax.GradientTransformation
    compute_dtype: Any
    multi_step_fn: Callable | None = None   # jitted steps(state, stacked batches) when steps_per_call > 1
    steps_per_call: int = 1

    def model(self, dtype: Any = None) -> nnx.Module:
        return merge_model(self.graphdef, self.state, dtype)


def setup_training(config: ml_collections.ConfigDict, model: nnx.Module, loss_fn: LossFn,
                   mesh: jax.sharding.Mesh | None = None, seed: int | None = None) -> TrainSetup:
    """The public way to build a trainer: optimizer from `config.optim`, mesh from `config.mesh` (unless
    given), the train state placed on it, and the jitted step in `config.train.compute_dtype`."""
    tc = config.train
    optimizer = make_optimizer(config.optim)
    mesh = mesh if mesh is not None else sharding_lib.make_mesh(config.get("mesh"))
    compute_dtype = jnp.dtype(tc.get("compute_dtype", "bfloat16"))
    members = int(tc.get("members", 1))
    ema_decay = float(tc.get("ema_decay", 0.0))
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"train.ema_decay must be in [0, 1) (0: no average); got {ema_decay}.")
    graphdef, state = init_train_state(model, optimizer, member_keys(tc.seed if seed is None else seed, members),
                                       mesh, members, ema=ema_decay > 0)
    step_fn = make_train_step(graphdef, loss_fn, optimizer, compute_dtype, members=members, ema_decay=ema_decay)
    per_call = int(tc.get("steps_per_call", 1))
    multi_step_fn = (make_train_step(graphdef, loss_fn, optimizer, compute_dtype, steps_per_call=per_call,
                                     members=members, ema_decay=ema_decay) if per_call > 1 else None)
    return TrainSetup(graphdef=graphdef, state=state, step_fn=step_fn, mesh=mesh, optimizer=optimizer,
                      compute_dtype=compute_dtype, multi_step_fn=multi_step_fn, steps_per_call=per_call)


def member_keys(seed: int, members: int = 1) -> jax.Array:
    """The train key of a run, or with members > 1 one per member: member i gets seed + i's key, the key of
    the run it would be alone with train.seed + i."""
    if members <= 1:
        return jax.random.key(seed)
    return jnp.stack([jax.random.key(seed + i) for i in range(members)])


def restore_trained_model(config: ml_collections.ConfigDict, workdir: str, model: nnx.Module,
                          step: int | None = None, dtype: Any = None) -> nnx.Module:
    """The model trained by `train(config, workdir, ...)`, restored from workdir/checkpoints (latest finalized
    step unless given), on one device and in eval mode. `model` is a freshly built skeleton of the same shape."""
    optimizer = make_optimizer(config.optim)
    members = int(config.train.get("members", 1))
    graphdef, state = init_train_state(model, optimizer, member_keys(config.train.seed, members), members=members,
                                       ema=float(config.train.get("ema_decay", 0.0)) > 0)
    with checkpoint_lib.Checkpointer(f"{workdir}/checkpoints") as ckpt:
        state = ckpt.restore(state, step)
    restored = merge_model(graphdef, state, dtype)
    restored.eval()
    return restored


def train_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Defaults for the `train` config section."""
    # steps_per_call: optimizer steps per jitted call (a lax.scan); > 1 only pays for models whose step is
    # shorter than the host's per-call overhead. Logging, eval and checkpoints then happen at call boundaries.
    # members: independent runs of one small model trained as one vmapped program (seeds as replicates, small
    # ensembles); the model is core.train.stack_models(...) and every batch leaf [batch, members, ...]
    # ema_decay: > 0 keeps a moving average of the params, which eval hooks, merge_model and
    # restore_trained_model then use
    defaults = dict(num_steps=1000, log_every=50, eval_every=500, checkpoint_every=500, keep_checkpoints=3,
                    seed=0, data_seed=0, compute_dtype="bfloat16", async_checkpoint=True, steps_per_call=1,
                    members=1, ema_decay=0.0)
    defaults.update(overrides)
    return ml_collections.ConfigDict(defaults)


Batches = Iterator[Any] | Callable[[int], Any]


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    graphdef: nnx.GraphDef
    history: list[dict]          # every logged row (train and eval) written this run


def train(config: ml_collections.ConfigDict, workdir: str, model: nnx.Module, loss_fn: LossFn,
          batches: Batches, eval_fn: Callable[[nnx.Module, int], Mapping[str, Any]] | None = None,
          mesh: jax.sharding.Mesh | None = None,
          hooks: tuple[Callable[[int, TrainState, dict], None], ...] = (),
          identity: Mapping[str, Any] | None = None) -> TrainResult:
    """Runs `config.train.num_steps` steps, resuming from `workdir/checkpoints` if a checkpoint is there.

    `batches` is an iterator (a grain iterator's position is checkpointed with the state) or a function
    `step -> batch` (deterministic in the step, so nothing needs saving). `eval_fn(model, step)` returns
    scalars (logged as eval/...) and may return a "sample" string (logged as text).

    Reliability: the workdir pins its identity (parameter shapes, global batch shapes, and the caller's
    `identity`, e.g. the tokenizer hash) in identity.json and refuses a run that differs before writing
    anything (config.json included); resume falls back past damaged checkpoints; metrics rows of replayed
    steps are dropped; SIGINT/SIGTERM save a checkpoint and raise errors.Interrupted.
    """
    tc = config.train
    setup = setup_training(config, model, loss_fn, mesh)
    graphdef, state, step_fn, mesh, compute_dtype = (setup.graphdef, setup.state, setup.step_fn, setup.mesh,
                                                     setup.compute_dtype)
    history: list[dict] = []
    get_batch = batches if callable(batches) and not hasattr(batches, "__next__") else None
    first_host = get_batch(0) if get_batch else next(batches)
    first_batch = sharding_lib.shard_batch(first_host, mesh)
    workdir_lib.pin_identity(workdir, workdir_lib.run_identity(state, first_batch, identity))
    workdir_lib.write_config(workdir, config)
    writer = None
    with _StopRequests() as stop, checkpoint_lib.Checkpointer(
            f"{workdir}/checkpoints", keep=tc.keep_checkpoints, async_save=tc.async_checkpoint) as ckpt:
        try:
            start = 0
            if ckpt.all_steps():
                start, state, data_state = ckpt.restore_latest(state, with_data=True, quarantine=True)
                if data_state is not None and hasattr(batches, "set_state"):
                    batches.set_state(data_state)
                    first_batch = None     # the iterator now stands after step `start`
                metrics_lib.log_progress(f"resumed from {workdir}/checkpoints at step {start}")
            if get_batch and start:
                first_batch = None
            workdir_lib.drop_rows_after(workdir, start)
            writer = metrics_lib.MetricsWriter(workdir)
            progress = metrics_lib.Progress(tc.num_steps, start)
            started = time.perf_counter()
            pending: tuple[int, dict] | None = None
            per_call = setup.steps_per_call
            step = start
            while step < tc.num_steps:
                previous_step = step
                count = per_call if per_call > 1 and tc.num_steps - step >= per_call else 1
                if first_batch is not None and count == 1:
                    batch, first_batch = first_batch, None
                else:
                    host = [first_host] if first_batch is not None else []
                    first_batch = None
                    host += [get_batch(s) if get_batch else next(batches) for s in range(step + len(host), step + count)]
                    batch = (sharding_lib.shard_batch(host[0], mesh) if count == 1 else sharding_lib.shard_batch(
                        jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *host), mesh,
                        stacked=True))
                step += count
                state, metrics = (setup.multi_step_fn if count > 1 else step_fn)(state, batch)
                if pending is not None:           # check the previous call while this one runs
                    _check_finite(*pending, workdir)
                pending = (step, metrics)
                for hook in hooks:
                    hook(step, state, metrics)
                is_last = step == tc.num_steps
                crossed = lambda every: step // every > previous_step // every
                if crossed(tc.log_every) or is_last:
                    row = _check_finite(step, metrics, workdir)
                    row = {k: v for k, v in row.items() if k != "nonfinite"}
                    writer.write(step, {**row, "steps_per_s": progress.update(step)})
                    history.append({"step": step, "wall_s": time.perf_counter() - started, **row})
                    metrics_lib.log_progress(progress.line(step, {"loss": row["loss"]}))
                if eval_fn is not None and (crossed(tc.eval_every) or is_last):
                    result = dict(eval_fn(merge_model(graphdef, state, compute_dtype), step))
                    sample = result.pop("sample", None)
                    writer.write(step, result, prefix="eval/")
                    history.append({"step": step, "wall_s": time.perf_counter() - started,
                                    **{f"eval/{k}": float(v) for k, v in result.items()}})
                    if sample is not None:
                        writer.write_text(step, "sample", sample)
                    metrics_lib.log_progress(f"eval step {step}: " + " ".join(f"{k} {float(v):.4g}" for k, v in result.items()))
                if crossed(tc.checkpoint_every) or is_last or stop.requested:
                    _check_finite(step, metrics, workdir)
                    data_state = batches.get_state() if hasattr(batches, "get_state") else None
                    ckpt.save(step, state, data_state, force=True)
                if stop.requested and not is_last:
                    ckpt.wait()
                    raise errors.Interrupted(
                        f"stopped by {stop.requested} at step {step}/{tc.num_steps} after saving a checkpoint "
                        f"there; rerun the same command to resume from step {step}.")
        finally:
            if writer is not None:
                writer.close()
    return TrainResult(state=state, graphdef=graphdef, history=history)


def _check_finite(step: int, metrics: dict, workdir: str) -> dict:
    row = {k: float(np.asarray(v)) for k, v in metrics.items()}
    if row.get("nonfinite", 0.0) or not np.isfinite(row["loss"]):
        raise errors.NonFiniteLossError(
            f"Loss became non-finite at step {step} (loss={row['loss']}, grad_norm={row.get('grad_norm')}); "
            f"the update was skipped and nothing after the last good checkpoint in {workdir} was saved. "
            "Lower optim.learning_rate or check the data.")
    return row


class _StopRequests:
    """Within the block, SIGINT/SIGTERM only set `requested` (the loop saves, then stops); a second signal
    interrupts at once. Only the main thread can own signal handlers; elsewhere this does nothing."""

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested:            # second signal: the user means it
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        metrics_lib.log_progress(f"{self.requested}: saving a checkpoint after this step (again to quit now)")

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
