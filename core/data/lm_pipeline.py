"""grain pipeline: packed token stream -> fixed windows of seq_len + 1 -> shuffle -> shard -> batch.

Windows are cut from the split's flat token stream (documents joined by EOS) with stride seq_len, so each
window's last token is the next window's first input. Shuffling uses the *data* seed (independent of the
train seed); each process takes every process_count-th window so processes see disjoint data. The iterator
is grain's, so `get_state()` / `set_state()` resume exactly where training stopped.
"""

from __future__ import annotations

import os

import grain
import jax
import numpy as np

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


def make_lm_dataset(corpus_dir: str, split: str, seq_len: int, batch_size: int, seed: int,
                    num_epochs: int | None = None, process_index: int | None = None,
                    process_count: int | None = None) -> grain.MapDataset:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    windows = TokenWindows(tokenizer_lib.open_token_stream(os.path.join(corpus_dir, f"tokens_{split}.bin")),
                           seq_len)
    if len(windows) < batch_size * process_count:
        raise ValueError(
            f"The {split} split of {corpus_dir} has {len(windows)} windows of {seq_len + 1} tokens, fewer than one "
            f"batch ({batch_size} x {process_count} processes); build a larger corpus or lower seq_len/batch_size.")
    dataset = grain.MapDataset.source(windows)
    if split == "train":
        dataset = dataset.shuffle(seed=seed)
    dataset = dataset[process_index::process_count]
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(lambda tokens: {"tokens": tokens})
    return dataset.repeat(num_epochs) if num_epochs != 1 else dataset


def make_lm_iterator(corpus_dir: str, split: str, seq_len: int, batch_size: int, seed: int,
                     num_epochs: int | None = None) -> grain.DatasetIterator:
    """Batches {'tokens': int32[batch_size, seq_len + 1]}; infinite unless num_epochs is given."""
    return iter(make_lm_dataset(corpus_dir, split, seq_len, batch_size, seed, num_epochs).to_iter_dataset())
