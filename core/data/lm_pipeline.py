"""grain pipeline: packed token stream -> fixed windows of seq_len + 1 -> shuffle -> shard -> batch.

Documents are tokenized once at build time (core.data.corpus) into one flat stream per split, documents joined
by <|endoftext|>: reading the memory-mapped stream is far faster than tokenizing on the fly (the figures, from
`python -m launch.build_corpus ... --measure`, are in README.md).
`document_tokens` keeps the on-the-fly path (tfds.data_source -> grain -> tokenize) for measuring and checks.

Windows are cut with stride seq_len, so each window's last token is the next window's first input and every
token is a target exactly once per epoch. Train windows are shuffled by the *data* seed (independent of the
train seed), reshuffled each epoch, and repeated forever by default; other splits are one ordered pass. Each
process takes every process_count-th window of the same permutation, so processes see disjoint data and the
same number of batches. The iterator is grain's: `get_state()` / `set_state()` resume exactly where it stopped.
"""

from __future__ import annotations

import os
import time

import grain
import jax
import numpy as np

from core.data import corpus as corpus_lib
from core.data import tokenizer as tokenizer_lib


class TokenWindows:
    """Random access over windows of `seq_len + 1` tokens of a memory-mapped stream."""

    def __init__(self, stream: np.ndarray, seq_len: int):
        self._stream = stream
        self._seq_len = seq_len
        self._count = max(0, (len(stream) - 1) // seq_len)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        start = int(index) * self._seq_len
        return np.asarray(self._stream[start:start + self._seq_len + 1], np.int32)


def open_split_stream(corpus_dir: str, split: str) -> np.ndarray:
    """The packed token stream of a split; one clear error if the corpus or the split is missing."""
    path = os.path.join(corpus_dir, f"tokens_{split}.bin")
    if not os.path.exists(path) and os.path.exists(os.path.join(corpus_dir, "manifest.json")):
        corpus_lib.check_split(corpus_dir, split)   # names the splits this corpus has
    return tokenizer_lib.open_token_stream(path)


def make_lm_dataset(corpus_dir: str, split: str, seq_len: int, batch_size: int, seed: int,
                    num_epochs: int | None = None, process_index: int | None = None,
                    process_count: int | None = None) -> grain.MapDataset:
    """Batches {'tokens': int32[batch_size, seq_len + 1]} of this process's share of the split.

    num_epochs=None: forever for train, one pass for any other split.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len and batch_size must be positive, got {seq_len} and {batch_size}.")
    windows = TokenWindows(open_split_stream(corpus_dir, split), seq_len)
    if len(windows) < batch_size * process_count:
        raise ValueError(
            f"The {split} split of {corpus_dir} has {len(windows)} windows of {seq_len + 1} tokens, fewer than one "
            f"batch ({batch_size} x {process_count} processes); build a larger corpus or lower seq_len/batch_size.")
    training = split == "train"
    if num_epochs is None and not training:
        num_epochs = 1
    dataset = grain.MapDataset.source(windows)
    if training:
        dataset = dataset.shuffle(seed=seed)
    per_process = len(windows) // process_count     # equal shares, so no process waits for another
    dataset = dataset[process_index:per_process * process_count:process_count]
    dataset = dataset.batch(batch_size, drop_remainder=True).map(lambda tokens: {"tokens": tokens})
    return dataset if num_epochs == 1 else dataset.repeat(num_epochs)   # repeat reseeds the shuffle per epoch


def make_lm_iterator(corpus_dir: str, split: str, seq_len: int, batch_size: int, seed: int,
                     num_epochs: int | None = None) -> grain.DatasetIterator:
    """Checkpointable iterator of {'tokens': int32[batch_size, seq_len + 1]} for this process."""
    return iter(make_lm_dataset(corpus_dir, split, seq_len, batch_size, seed, num_epochs).to_iter_dataset())


def document_tokens(corpus_dir: str, split: str) -> grain.MapDataset:
    """int32 tokens of each document of a split, EOS appended, tokenized on the fly from the TFDS store."""
    tokenizer = tokenizer_lib.load_tokenizer(corpus_dir)
    documents = grain.MapDataset.source(corpus_lib.data_source(corpus_dir, split))
    return documents.map(lambda doc: tokenizer_lib.encode(tokenizer, doc["text"].decode("utf-8"), append_eos=True))


def measure_tokens_per_second(corpus_dir: str, split: str = "train", seq_len: int = 1024, batch_size: int = 32,
                              seconds: float = 5.0) -> dict[str, float]:
    """Tokens/s of the packed-stream pipeline and of on-the-fly tokenization, each run for ~`seconds`."""

    def rate(iterator, count) -> float:
        next(iterator)   # first element: start-up, not throughput
        tokens, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            try:
                tokens += count(next(iterator))
            except StopIteration:
                break
        return tokens / (time.perf_counter() - start)

    packed = make_lm_iterator(corpus_dir, split, seq_len, batch_size, seed=0, num_epochs=None)
    on_the_fly = iter(document_tokens(corpus_dir, split).to_iter_dataset())
    return dict(packed_tokens_per_s=rate(packed, lambda batch: batch["tokens"][:, 1:].size),
                on_the_fly_tokens_per_s=rate(on_the_fly, len))
