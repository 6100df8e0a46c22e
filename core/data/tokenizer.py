"""Byte-level BPE trained offline with HF `tokenizers`, and packed token streams for training.

The same documents and settings give a byte-identical tokenizer.json. A split is stored as one flat stream
of token ids (documents joined by <|endoftext|>) in a `.bin` of uint16 (vocab <= 65536) or uint32, with a
small JSON header, so the input pipeline is a memory map.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from core import fileio

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """GPT-2 style byte-level BPE (any UTF-8 text round-trips); deterministic for the same texts."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer, directory: str) -> str:
    """Writes directory/tokenizer.json atomically; the same tokenizer gives the same bytes."""
    path = os.path.join(directory, "tokenizer.json")
    with fileio.atomic_path(path) as tmp:
        tokenizer.save(tmp)
    return path


def load_tokenizer(corpus_dir: str):
    path = os.path.join(corpus_dir, "tokenizer.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No tokenizer at {path}; build the corpus first (launch/build_corpus.py).")
    return Tokenizer.from_file(path)


def eos_id(tokenizer) -> int:
    return tokenizer.token_to_id(EOS)


def encode(tokenizer, text: str, append_eos: bool = False) -> np.ndarray:
    """int32 token ids of one text, with <|endoftext|> at the end if asked (as documents are stored)."""
    ids = tokenizer.encode(text).ids + ([eos_id(tokenizer)] if append_eos else [])
    return np.asarray(ids, np.int32)


def decode(tokenizer, ids) -> str:
    """Text of token ids (special tokens such as <|endoftext|> are dropped)."""
    return tokenizer.decode(np.asarray(ids).reshape(-1).tolist())


def write_token_stream(tokenizer, texts: Iterable[str], path: str, batch_docs: int = 256) -> int:
    """Tokenizes documents (EOS after each) into `path` atomically; returns the number of tokens."""
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 65536 else np.uint32
    eos = eos_id(tokenizer)
    total = 0
    with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
        batch: list[str] = []

        def flush():
            nonlocal total
            for encoding in tokenizer.encode_batch(batch):
                ids = np.asarray(encoding.ids + [eos], dtype)
                f.write(ids.tobytes())
                total += ids.size
            batch.clear()

        for text in texts:
            batch.append(text)
            if len(batch) == batch_docs:
                flush()
        if batch:
            flush()
    fileio.write_text_atomic(path + ".json", json.dumps(dict(dtype=np.dtype(dtype).name, num_tokens=total)))
    return total


def open_token_stream(path: str) -> np.ndarray:
    """The stream as a read-only memory map (no copy), with its dtype from the JSON header."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Token stream {path} is missing; rebuild the corpus.")
    with open(path + ".json") as f:
        header = json.load(f)
    if header["num_tokens"] == 0:
        return np.zeros((0,), header["dtype"])
    return np.memmap(path, dtype=header["dtype"], mode="r", shape=(header["num_tokens"],))
