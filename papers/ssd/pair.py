"""SSD's model pair: a target LM trained on the offline corpus and a smaller draft distilled from it.

    draft = pair.draft_config(target_config, {"n_layers": 2}, num_steps=600, learning_rate=2e-3)
    target, draft_model = pair.train_pair(target_config, draft, workdir)
    pair.read_summary(workdir)     # params, steps, wall seconds, train and validation loss of each model

The target trains through core.lm.train_lm (corpus + tokenizer built into `data.corpus_dir` if missing), the
draft through core.train.train on KL(target || draft) + `distill.hard_weight` x next-token CE
(core.lm.distillation_loss), on the same corpus with its own data order. Both resume from
`workdir/target` and `workdir/draft`; a finished model is only restored. Both come back through
core.train.restore_trained_model: f32 params on one device, eval mode.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

import jax.numpy as jnp
import ml_collections
from flax import nnx

from core import checkpoint as checkpoint_lib
from core import config as config_lib
from core import lm
from core import metrics as metrics_lib
from core import train as train_lib
from core.nn import transformer as tfm
from core.precision import cast_floating

SUMMARY = "summary.json"    # per model, under workdir/{target,draft}: the figures of the run that trained it


def draft_config(target_config: ml_collections.ConfigDict, model: Mapping[str, Any],
                 num_steps: int | None = None, learning_rate: float | None = None,
                 warmup_steps: int | None = None, hard_weight: float = 0.5,
                 temperature: float = 1.0) -> ml_collections.ConfigDict:
    """The draft's training config: the target's corpus, data, mesh and optimizer with `model` overriding
    the target's model fields (a partial dict, e.g. {"n_layers": 1}, or a full one), its own schedule
    (the target's where not given), init seed and data order (target's + 1), and a `distill` section."""
    config = config_lib.apply_overrides(target_config, {})
    config.model.update(dict(model))
    steps = int(num_steps or target_config.train.num_steps)
    config.train.update(num_steps=steps, seed=target_config.train.seed + 1,
                        data_seed=target_config.train.data_seed + 1)
    config.optim.update(total_steps=steps,
                        learning_rate=target_config.optim.learning_rate if learning_rate is None else learning_rate,
                        warmup_steps=target_config.optim.warmup_steps if warmup_steps is None else warmup_steps)
    config.distill = dict(hard_weight=float(hard_weight), temperature=float(temperature))
    return config


def vocab_size(config: ml_collections.ConfigDict) -> int:
    from core.data import tokenizer as tokenizer_lib
    return tokenizer_lib.load_tokenizer(config.data.corpus_dir).get_vocab_size()


def finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """True when workdir holds a finalized checkpoint at config.train.num_steps (or later)."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return False
    with checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        return (ckpt.latest_step() or 0) >= config.train.num_steps


def restore(config: ml_collections.ConfigDict, workdir: str, vocab: int) -> tfm.Transformer:
    skeleton = tfm.Transformer(lm.model_config(config, vocab), rngs=nnx.Rngs(params=config.train.seed))
    return train_lib.restore_trained_model(config, workdir, skeleton)


def validation_loss(model: tfm.Transformer, config: ml_collections.ConfigDict) -> float:
    from core.data import lm_pipeline

    batches = lm_pipeline.make_lm_iterator(config.data.corpus_dir, "validation", config.data.seq_len,
                                           config.data.batch_size, seed=0, num_epochs=1)
    return lm.evaluate(model, batches, config.eval.num_batches)["loss"]


def _write_summary(workdir: str, config: ml_collections.ConfigDict, model: tfm.Transformer,
                   result: train_lib.TrainResult, wall_s: float) -> None:
    losses = [row["loss"] for row in result.history if "loss" in row]
    metrics_lib.write_json(os.path.join(workdir, SUMMARY), dict(
        params=tfm.param_count(model.config), steps=config.train.num_steps, wall_s=wall_s,
        train_loss=losses[-1] if losses else None, val_loss=validation_loss(model, config),
        tokens_per_step=config.data.batch_size * config.data.seq_len))


def train_target(config: ml_collections.ConfigDict, workdir: str) -> tfm.Transformer:
    """The target (next-token loss, core.lm.train_lm), trained unless finished in `workdir`, then restored."""
    if not finished(config, workdir):
        from core.data import corpus as corpus_lib
        corpus_lib.ensure_corpus(config.corpus, config.data.corpus_dir)   # built first: wall_s is training only
        start = time.perf_counter()
        result = lm.train_lm(config, workdir)
        wall_s = time.perf_counter() - start
        model = restore(config, workdir, vocab_size(config))
        _write_summary(workdir, config, model, result, wall_s)
        return model
    return restore(config, workdir, vocab_size(config))


def train_draft(config: ml_collections.ConfigDict, workdir: str, target: tfm.Transformer) -> tfm.Transformer:
    """The draft distilled from `target` (its bf16 copy is the teacher), trained unless finished, then restored."""
    from core.data import lm_pipeline

    if "distill" not in config:
        raise ValueError("The draft config has no `distill` section; build it with papers.ssd.pair.draft_config.")
    vocab = vocab_size(config)
    if not finished(config, workdir):
        graphdef, state = nnx.split(target)
        teacher = nnx.merge(graphdef, cast_floating(state, jnp.bfloat16))
        loss = lm.distillation_loss(teacher, temperature=config.distill.temperature,
                                    hard_weight=config.distill.hard_weight)
        batches = lm_pipeline.make_lm_iterator(config.data.corpus_dir, "train", config.data.seq_len,
                                               config.data.batch_size, seed=config.train.data_seed)
        model = tfm.Transformer(lm.model_config(config, vocab), rngs=nnx.Rngs(params=config.train.seed))
        start = time.perf_counter()
        result = train_lib.train(config, workdir, model, loss, batches)
        wall_s = time.perf_counter() - start
        model = restore(config, workdir, vocab)
        _write_summary(workdir, config, model, result, wall_s)
        return model
    return restore(config, workdir, vocab)


def train_pair(target_config: ml_collections.ConfigDict, draft_config: ml_collections.ConfigDict,
               workdir: str) -> tuple[tfm.Transformer, tfm.Transformer]:
    """(target, draft): trained (or resumed, or restored when finished) under workdir/target and workdir/draft."""
    if target_config.data.corpus_dir != draft_config.data.corpus_dir:
        raise ValueError("Target and draft must share one corpus (data.corpus_dir); build the draft config with "
                         "papers.ssd.pair.draft_config(target_config, ...).")
    target = train_target(target_config, os.path.join(workdir, "target"))
    draft = train_draft(draft_config, os.path.join(workdir, "draft"), target)
    return target, draft


def read_summary(workdir: str) -> dict:
    """{"target": {...}, "draft": {...}} from the runs that trained them (a model restored from an older run
    keeps that run's figures; a model with no summary is absent)."""
    out = {}
    for name in ("target", "draft"):
        summary = metrics_lib.read_json(os.path.join(workdir, name, SUMMARY))
        if summary is not None:
            out[name] = summary
    return out
