"""Language-model training on the offline corpus: losses, evaluation, sampling, and the `train_lm` job.

Shared by the foundation (launch/train_lm.py), SSD (target and draft) and the data-constrained pretraining
paper (distillation, ensembles), so it lives in core and knows nothing about any paper.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from core import sharding as sharding_lib
from core import train as train_lib
from core.nn import transformer as tfm


def model_config(config: ml_collections.ConfigDict, vocab_size: int | None = None) -> tfm.TransformerConfig:
    fields = dict(config.model.to_dict())
    if vocab_size is not None:
        fields["vocab_size"] = vocab_size
    return tfm.TransformerConfig(**fields)


def next_token_loss(model: nnx.Module, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
    """Mean cross-entropy of tokens[:, 1:] given tokens[:, :-1]; logits upcast to f32 for the softmax."""
    del rng
    tokens = batch["tokens"]
    logits = model(tokens[:, :-1]).astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    return losses.mean(), {}


CHUNK_GRADIENTS = ("recompute", "forward")


def make_next_token_loss(chunk_length: int = 0, chunk_gradient: str = "recompute") -> Callable:
    """The LM training loss: `next_token_loss` (chunk_length 0) or the same mean NLL over sequence chunks,
    never holding more than [B, chunk_length, V] logits. chunk_gradient "recompute": `chunked_token_nll`
    (the backward recomputes each chunk's logits); "forward": `chunked_mean_nll` (the gradient is formed
    in the forward pass, one pass over the logits and no recomputed matmul)."""
    if chunk_length < 0:
        raise ValueError(f"loss.chunk_length must be >= 0 (0: whole-sequence logits), got {chunk_length}.")
    if chunk_gradient not in CHUNK_GRADIENTS:
        raise ValueError(f"loss.chunk_gradient must be one of {CHUNK_GRADIENTS}, got {chunk_gradient!r}.")
    if chunk_length == 0:
        return next_token_loss

    def chunked_next_token_loss(model, batch, rng):
        del rng
        tokens = batch["tokens"]
        hidden, head, labels = model.final_hidden(tokens[:, :-1]), model.output_projection(), tokens[:, 1:]
        if chunk_gradient == "forward":
            return chunked_mean_nll(hidden, head, labels, chunk_length), {}
        return chunked_token_nll(hidden, head, labels, chunk_length).mean(), {}

    return chunked_next_token_loss


def _mean_nll_and_unit_grads(hidden, head, labels, chunk_length):
    """Mean NLL and its gradients w.r.t. hidden and head (for an upstream gradient of 1), in one pass."""
    batch, length = labels.shape
    real = _chunks(jnp.ones(labels.shape, jnp.float32), chunk_length)     # 0 on the padding

    def one(head_grad, args):
        h, y, w = args
        logits = _chunk_logits(h, head)
        lse = jax.nn.logsumexp(logits, axis=-1)
        nll = (lse - jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]) * w
        dh, d_head = _chunk_nll_grads(h, y, logits, lse, w / (batch * length), head)
        return head_grad + d_head, (nll.sum(), dh)

    xs = (_chunks(hidden, chunk_length), _chunks(labels, chunk_length), real)
    head_grad, (sums, dh) = jax.lax.scan(one, jnp.zeros(head.shape, jnp.float32), xs)
    return sums.sum() / (batch * length), _unchunk(dh, length), head_grad


def _mean_nll_plain_primal(hidden, head, labels, chunk_length):
    # Not differentiated (e.g. evaluation): the loss alone, without forming gradients.
    return chunked_token_nll(hidden, head, labels, chunk_length).mean()


def _mean_nll_fwd(hidden, head, labels, chunk_length):
    loss, d_hidden, d_head = _mean_nll_and_unit_grads(hidden, head, labels, chunk_length)
    return loss, (d_hidden, d_head.astype(head.dtype))


def _mean_nll_bwd(chunk_length, residuals, g):
    d_hidden, d_head = residuals
    return (g * d_hidden).astype(d_hidden.dtype), (g * d_head).astype(d_head.dtype), None


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def chunked_mean_nll(hidden: jax.Array, head: jax.Array, labels: jax.Array, chunk_length: int) -> jax.Array:
    """Mean over [B, T] of the NLL of `labels` under softmax(hidden @ head), like `chunked_token_nll`'s
    mean, but differentiated by forming the gradients during the forward pass (one pass over each chunk's
    logits; the backward only scales the saved d hidden [B, T, d] and d head [d, V]). Same numerics."""
    return _mean_nll_plain_primal(hidden, head, labels, chunk_length)


chunked_mean_nll.defvjp(_mean_nll_fwd, _mean_nll_bwd)


def _chunks(x: jax.Array, chunk_length: int) -> jax.Array:
    """[B, T, ...] -> [T/c, B, c, ...] (T padded with zeros to a multiple of c); the batch axis keeps its
    sharding, so each chunk's matmul stays local to the data-parallel shard."""
    batch, length = x.shape[:2]
    pad = -length % chunk_length
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape(batch, (length + pad) // chunk_length, chunk_length, *x.shape[2:])
    return jnp.moveaxis(x, 1, 0)


def _unchunk(x: jax.Array, length: int) -> jax.Array:
    x = jnp.moveaxis(x, 0, 1)
    return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :length]


def _chunk_logits(hidden: jax.Array, head: jax.Array) -> jax.Array:
    # Accumulated in f32 by the matmul, written in the compute dtype (half the bytes of f32, as the plain
    # path's logits), upcast inside the fused softmax.
    return jnp.einsum("bcd,dv->bcv", hidden, head).astype(jnp.float32)


def _chunk_nll_grads(h, y, logits, lse, weight, head):
    """Gradients of sum(weight * nll) over one chunk w.r.t. its hidden states (compute dtype) and the head (f32):
    d nll / d logits = softmax - onehot, cast to the compute dtype for the two backward matmuls."""
    probs = jnp.exp(logits - lse[..., None])
    dlogits = ((probs - jax.nn.one_hot(y, head.shape[1], dtype=probs.dtype)) * weight[..., None]).astype(h.dtype)
    dh = jnp.einsum("bcv,dv->bcd", dlogits, head, preferred_element_type=jnp.float32).astype(h.dtype)
    return dh, jnp.einsum("bcd,bcv->dv", h, dlogits, preferred_element_type=jnp.float32)


def _chunked_nll_fwd(hidden, head, labels, chunk_length):
    def one(args):
        h, y = args
        logits = _chunk_logits(h, head)
        lse = jax.nn.logsumexp(logits, axis=-1)
        return lse - jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0], lse

    nll, lse = jax.lax.map(one, (_chunks(hidden, chunk_length), _chunks(labels, chunk_length)))
    length = hidden.shape[1]
    return _unchunk(nll, length), (hidden, head, labels, _unchunk(lse, length))


def _chunked_nll_bwd(chunk_length, residuals, g):
    hidden, head, labels, lse = residuals

    def one(head_grad, args):
        h, y, lse_c, g_c = args
        # Recompute the chunk's logits instead of storing [B, T, V].
        dh, d_head = _chunk_nll_grads(h, y, _chunk_logits(h, head), lse_c, g_c, head)
        return head_grad + d_head, dh

    xs = tuple(_chunks(a, chunk_length) for a in (hidden, labels, lse, g.astype(jnp.float32)))
    head_grad, dh = jax.lax.scan(one, jnp.zeros(head.shape, jnp.float32), xs)
    return _unchunk(dh, hidden.shape[1]), head_grad.astype(head.dtype), None


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def chunked_token_nll(hidden: jax.Array, head: jax.Array, labels: jax.Array, chunk_length: int) -> jax.Array:
    """Per-token NLL f32[B, T] of `labels` under softmax(hidden @ head), over sequence chunks of
    `chunk_length`: forward and backward each hold one chunk's logits [B, c, V], never [B, T, V] (the
    backward recomputes them from the saved hidden states and log-normalisers). Numerics as the plain path
    (`model(tokens).astype(f32)` + softmax cross-entropy): matmuls in the inputs' dtype with f32 accumulation,
    logits rounded to that dtype, softmax in f32, the logits' gradient cast back for the backward matmuls;
    only the head's gradient is summed over chunks in f32."""
    return _chunked_nll_fwd(hidden, head, labels, chunk_length)[0]


chunked_token_nll.defvjp(_chunked_nll_fwd, _chunked_nll_bwd)


def distillation_loss(teacher: nnx.Module, temperature: float = 1.0, hard_weight: float = 0.0) -> Callable:
    """KL(teacher || student) on next-token distributions (plus optional hard-label CE): drafts and students."""

    def loss_fn(model, batch, rng):
        del rng
        inputs = batch["tokens"][:, :-1]
        student = model(inputs).astype(jnp.float32) / temperature
        teacher_logits = jax.lax.stop_gradient(teacher(inputs).astype(jnp.float32)) / temperature
        teacher_logp = jax.nn.log_softmax(teacher_logits)
        kl = jnp.sum(jnp.exp(teacher_logp) * (teacher_logp - jax.nn.log_softmax(student)), -1).mean()
        ce = optax.softmax_cross_entropy_with_integer_labels(student, batch["tokens"][:, 1:]).mean()
        return kl + hard_weight * ce, {"kl": kl, "ce": ce}

    return loss_fn


@jax.jit
def _eval_batch(model: nnx.Module, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = model(tokens[:, :-1]).astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    return losses.sum(), jnp.asarray(losses.size, jnp.float32)


def evaluate(model: nnx.Module, batches: Iterator[dict], num_batches: int,
             mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
    """Validation loss (nats/token) and perplexity over up to `num_batches` batches."""
    total, count = 0.0, 0.0
    for _, batch in zip(range(num_batches), batches):
        tokens = sharding_lib.shard_batch(batch, mesh)["tokens"] if mesh is not None else jnp.asarray(batch["tokens"])
        loss_sum, n = _eval_batch(model, tokens)
        total, count = total + float(loss_sum), count + float(n)
    if count == 0:
        raise ValueError("The validation split produced no batches; build a larger corpus or lower data.batch_size.")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def generate(model: nnx.Module, prompt: jax.Array, max_new_tokens: int, key: jax.Array,
             temperature: float = 1.0, cache_dtype=jnp.bfloat16) -> jax.Array:
    """Plain autoregressive sampling for eval-time samples: prompt int32[B, L] -> int32[B, max_new_tokens]."""
    batch, length = prompt.shape
    cache = tfm.init_cache(model.config, batch, length + max_new_tokens, cache_dtype)
    return _generate(model, prompt, cache, key, max_new_tokens, temperature)


@functools.partial(jax.jit, static_argnames=("max_new_tokens", "temperature"))
def _generate(model, prompt, cache, key, max_new_tokens, temperature):
    lengths = jnp.full((prompt.shape[0],), prompt.shape[1], jnp.int32)
    logits, cache = tfm.prefill(model, prompt, lengths, cache)
    last = logits[:, -1]

    def pick(logits, key):
        if temperature == 0.0:
            return jnp.argmax(logits, -1).astype(jnp.int32)
        return jax.random.categorical(key, logits.astype(jnp.float32) / temperature).astype(jnp.int32)

    def body(carry, key):
        last, cache = carry
        token = pick(last, key)
        logits, cache = tfm.decode(model, token, cache)
        return (logits, cache), token

    _, tokens = jax.lax.scan(body, (last, cache), jax.random.split(key, max_new_tokens))
    return tokens.T


def train_lm(config: ml_collections.ConfigDict, workdir: str) -> train_lib.TrainResult:
    """Builds (or reuses) the corpus and tokenizer, then trains the configured LM through core.train."""
    # Lazy: grain and TFDS load slowly, and the decoding users of this module need neither.
    from core.data import corpus as corpus_lib
    from core.data import lm_pipeline, tokenizer as tokenizer_lib

    corpus_dir = config.data.corpus_dir
    manifest = corpus_lib.ensure_corpus(config.corpus, corpus_dir)
    tokenizer = tokenizer_lib.load_tokenizer(corpus_dir)
    if config.model.vocab_size != tokenizer.get_vocab_size():   # the tokenizer decides; say so, record the truth
        print(f"warning: config.model.vocab_size={config.model.vocab_size} replaced by the tokenizer's "
              f"{tokenizer.get_vocab_size()} (set --config.corpus.vocab_size to change the vocabulary)", flush=True)
        config.model.vocab_size = tokenizer.get_vocab_size()
    mesh = sharding_lib.make_mesh(config.get("mesh"))
    per_process_batch = config.data.batch_size // jax.process_count()
    train_batches = lm_pipeline.make_lm_iterator(
        corpus_dir, "train", config.data.seq_len, per_process_batch, seed=config.train.data_seed)
    cfg = model_config(config, vocab_size=tokenizer.get_vocab_size())
    model = tfm.Transformer(cfg, rngs=nnx.Rngs(params=config.train.seed))
    prompt_ids = np.asarray([tokenizer.encode(config.sample.prompt).ids], np.int32)

    def eval_fn(model, step):
        val = lm_pipeline.make_lm_iterator(corpus_dir, "validation", config.data.seq_len, per_process_batch,
                                           seed=0, num_epochs=1)
        result = evaluate(model, val, config.eval.num_batches, mesh)
        key = jax.random.key(config.sample.seed)
        new = generate(model, jnp.asarray(prompt_ids), config.sample.max_new_tokens, key,
                       config.sample.temperature)
        result["sample"] = config.sample.prompt + tokenizer.decode(np.asarray(new[0]).tolist())
        return result

    identity = {k: manifest[k] for k in ("tokenizer_sha256", "content_sha256", "vocab_size")}
    loss_config = config.get("loss", {})
    loss_fn = make_next_token_loss(loss_config.get("chunk_length", 0), loss_config.get("chunk_gradient", "recompute"))
    return train_lib.train(config, workdir, model, loss_fn, train_batches, eval_fn=eval_fn, mesh=mesh,
                           identity=identity)
