"""The distilled student as an SSD draft (cross-paper item 6): sequence-level distillation across vocabularies.

The sweep's students live in a 4k-BPE vocabulary; the SSD pair (papers/ssd/pair.py) uses its corpus's own
tokenizer (32k on the GPU), and a draft must share its target's vocabulary. Sequence-level distillation does
not need a shared vocabulary: the ensemble's synthetic sequences (papers.infinite_compute.sweep.synthesize)
and the fixed-token set's real documents are decoded to text with the 4k tokenizer and re-encoded with the
pair's tokenizer, then a model of the plain draft's architecture, schedule and seed is trained on the same
real:synthetic mixture the sweep's students use (next-token CE, core.train.train).

    real, synthetic, counts = draft.mixture_windows(real_4k, synthetic_4k, tok_4k, tok_pair, seq_len)
    config = draft.student_config(pair_target_config)          # = the plain draft's config
    student = draft.train_student(config, workdir, real, synthetic, fraction=0.75, vocab=...)

The measurement (acceptance and chain-SD speed-up against the pair's plain draft) is benchmarks code:
benchmarks/infinite_compute.py `--stages draft`, through benchmarks.decode.run_decode.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
from flax import nnx

from core import lm
from core import metrics as metrics_lib
from core import train as train_lib
from core.data import tokenizer as tokenizer_lib
from core.nn import transformer as tfm
from papers.infinite_compute import data as data_lib
from papers.ssd import pair

SUMMARY = "summary.json"


def documents_as_text(tokens: np.ndarray, tokenizer) -> list[str]:
    """The non-empty documents of a token stream (split at the tokenizer's EOS) as text."""
    eos = tokenizer_lib.eos_id(tokenizer)
    docs = data_lib.split_documents(np.asarray(tokens).reshape(-1), eos)
    ids = [d[d != eos].astype(np.int64).tolist() for d in docs]
    return [text for text in tokenizer.decode_batch([i for i in ids if i]) if text]


def encode_documents(texts: list[str], tokenizer) -> np.ndarray:
    """int32 stream of `texts` encoded by `tokenizer`, EOS after each (as the corpus stores documents)."""
    eos = tokenizer_lib.eos_id(tokenizer)
    parts = [np.asarray(e.ids + [eos], np.int32) for e in tokenizer.encode_batch(texts)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.int32)


def retokenize(tokens: np.ndarray, source, target) -> np.ndarray:
    """A token stream (or windows, flattened) of `source` re-encoded by `target`, document by document.

    Byte-level BPE on both sides, so the text is what the source tokens spell (a sampled sequence that cuts a
    UTF-8 character decodes it as U+FFFD, the same every time)."""
    return encode_documents(documents_as_text(tokens, source), target)


def mixture_windows(real: np.ndarray, synthetic: np.ndarray, source, target, seq_len: int
                    ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(real windows, synthetic windows, counts) in `target`'s vocabulary, int32[n, seq_len + 1] each."""
    real_stream = retokenize(real, source, target)
    synthetic_stream = retokenize(synthetic, source, target)
    counts = dict(real_source_tokens=int(np.asarray(real).size), real_tokens=int(real_stream.size),
                  synthetic_source_tokens=int(np.asarray(synthetic).size),
                  synthetic_tokens=int(synthetic_stream.size), source_vocab=source.get_vocab_size(),
                  target_vocab=target.get_vocab_size(), seq_len=int(seq_len))
    return data_lib.windows(real_stream, seq_len), data_lib.windows(synthetic_stream, seq_len), counts


def make_mixed_batches(real: np.ndarray, synthetic: np.ndarray, batch_size: int, synthetic_fraction: float,
                       seed: int):
    """step -> {"tokens": int32[batch, L+1]}: batch - round(batch * fraction) rows from the real windows, the
    rest from the synthetic ones, each pool walked in a fresh seeded permutation per pass (deterministic in
    the step, so core.train resumes without saving an iterator)."""
    if not 0.0 <= synthetic_fraction <= 1.0:
        raise ValueError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction}.")
    synthetic_rows = int(round(batch_size * synthetic_fraction))
    real_rows = batch_size - synthetic_rows
    if (real_rows and not len(real)) or (synthetic_rows and not len(synthetic)):
        raise ValueError("An empty window pool cannot fill its share of the batch; add data or change the fraction.")

    def rows(pool: np.ndarray, pool_id: int, step: int, per_batch: int) -> np.ndarray:
        positions = step * per_batch + np.arange(per_batch)
        out = np.empty((per_batch,), np.int64)
        for epoch in np.unique(positions // len(pool)):
            perm = np.random.default_rng([seed, pool_id, int(epoch)]).permutation(len(pool))
            mask = positions // len(pool) == epoch
            out[mask] = perm[positions[mask] % len(pool)]
        return pool[out]

    def batch(step: int) -> dict:
        parts = []
        if real_rows:
            parts.append(rows(real, 0, int(step), real_rows))
        if synthetic_rows:
            parts.append(rows(synthetic, 1, int(step), synthetic_rows))
        return {"tokens": np.concatenate(parts).astype(np.int32)}

    return batch


def student_config(target_config, draft_model=None, draft_train=None):
    """The plain draft's training config (papers.ssd.pair.draft_config with the pair config's draft_model and
    draft_train), so the student differs from the plain draft only in its data and loss."""
    model = dict(target_config.draft_model if draft_model is None else draft_model)
    schedule = dict(target_config.draft_train if draft_train is None else draft_train)
    return pair.draft_config(target_config, model, **schedule)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def train_student(config, workdir: str, real: np.ndarray, synthetic: np.ndarray, synthetic_fraction: float,
                  vocab: int) -> tfm.Transformer:
    """A model of config.model trained by next-token CE on the real:synthetic mixture (core.train.train),
    unless finished in `workdir`; then restored (f32, eval mode). The workdir pins the data's digest, so a
    different mixture refuses to resume into it."""
    if not pair.finished(config, workdir):
        model = tfm.Transformer(lm.model_config(config, vocab), rngs=nnx.Rngs(params=config.train.seed))
        batches = make_mixed_batches(real, synthetic, config.data.batch_size, synthetic_fraction,
                                     config.train.data_seed)
        start = time.perf_counter()
        result = train_lib.train(config, workdir, model, lm.next_token_loss, batches,
                                 identity=dict(mixture=_digest(real, synthetic), fraction=float(synthetic_fraction)))
        losses = [row["loss"] for row in result.history if "loss" in row]
        metrics_lib.write_json(os.path.join(workdir, SUMMARY), dict(
            params=tfm.param_count(lm.model_config(config, vocab)), steps=config.train.num_steps,
            wall_s=time.perf_counter() - start, train_loss=losses[-1] if losses else None,
            real_windows=len(real), synthetic_windows=len(synthetic), synthetic_fraction=float(synthetic_fraction)))
    return pair.restore(config, workdir, vocab)


def read_summary(workdir: str) -> dict | None:
    return metrics_lib.read_json(os.path.join(workdir, SUMMARY))
