"""The fixed-token regime: a deterministic D-token train set cut from the offline corpus, by documents.

The corpus (core.data.corpus) stores each split as one packed token stream with documents joined by
<|endoftext|>. Here the train stream is cut back into documents, the documents are shuffled by a seed and
taken whole until D tokens are reached (the last one truncated), so the set is a document-level sample and
the same (corpus, D, seed) gives the same bytes. Validation is the corpus's own validation split (other files
of the same packages: the same distribution, no document shared with train); `prose` (out-of-domain) is kept
when the corpus has it.

The result is a few MB of uint16 arrays plus a manifest, small enough to carry to the GPU machine, where the
whole train set then lives on device and every member gathers its own batches there (no input pipeline).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np

from core.data import corpus as corpus_lib
from core.data import tokenizer as tokenizer_lib

FORMAT_VERSION = 1


def split_documents(stream: np.ndarray, eos: int) -> list[np.ndarray]:
    """Documents of a packed stream, each ending with its EOS (a trailing partial document is kept)."""
    ends = np.flatnonzero(np.asarray(stream) == eos) + 1
    starts = np.concatenate([[0], ends[:-1]]) if len(ends) else np.zeros((0,), np.int64)
    docs = [stream[s:e] for s, e in zip(starts, ends)]
    tail_start = ends[-1] if len(ends) else 0
    if tail_start < len(stream):
        docs.append(stream[tail_start:])
    return docs


def sample_documents(stream: np.ndarray, eos: int, num_tokens: int, seed: int) -> tuple[np.ndarray, int]:
    """num_tokens tokens of whole documents in a seeded order (last one truncated); returns (tokens, docs)."""
    docs = split_documents(stream, eos)
    order = np.random.default_rng(seed).permutation(len(docs))
    taken, total = [], 0
    for index in order:
        if total >= num_tokens:
            break
        taken.append(np.asarray(docs[index]))
        total += len(docs[index])
    if total < num_tokens:
        raise ValueError(f"The corpus train split has {total} tokens, fewer than the {num_tokens} asked for; "
                         "lower data.train_tokens or build a larger corpus.")
    return np.concatenate(taken)[:num_tokens], len(taken)


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def build_fixed_token_set(corpus_dir: str, out_dir: str, train_tokens: int, eval_tokens: int,
                          seed: int = 0) -> dict:
    """Writes train.npy (D tokens), validation.npy and, if the corpus has it, prose.npy + manifest.json.

    Idempotent: an out_dir built from the same corpus and settings is reused. Written under a temp dir and
    renamed into place, so an interrupted build leaves nothing half-written.
    """
    corpus_manifest = corpus_lib.load_manifest(corpus_dir)
    settings = dict(format_version=FORMAT_VERSION, train_tokens=int(train_tokens), eval_tokens=int(eval_tokens),
                    seed=int(seed), corpus_content_sha256=corpus_manifest["content_sha256"],
                    tokenizer_sha256=corpus_manifest["tokenizer_sha256"])
    existing = load_manifest(out_dir, missing_ok=True)
    if existing is not None and existing["settings"] == settings:
        return existing
    tokenizer = tokenizer_lib.load_tokenizer(corpus_dir)
    eos = tokenizer_lib.eos_id(tokenizer)
    train_stream = tokenizer_lib.open_token_stream(os.path.join(corpus_dir, "tokens_train.bin"))
    train, num_docs = sample_documents(train_stream, eos, train_tokens, seed)
    arrays = {"train": train.astype(np.uint16)}
    counts = {"train": dict(tokens=int(train.size), documents=num_docs,
                            corpus_tokens=int(train_stream.size))}
    for split in ("validation", corpus_lib.PROSE_SPLIT):
        if split not in corpus_manifest["splits"]:
            continue
        stream = tokenizer_lib.open_token_stream(os.path.join(corpus_dir, f"tokens_{split}.bin"))
        # The first eval_tokens of the split, in stored order: a fixed set, the same for every run.
        arrays[split] = np.asarray(stream[:eval_tokens], np.uint16)
        counts[split] = dict(tokens=int(arrays[split].size), corpus_tokens=int(stream.size))
    manifest = dict(settings=settings, counts=counts, vocab_size=tokenizer.get_vocab_size(), eos_id=eos,
                    corpus_dir=os.path.abspath(corpus_dir), corpus_config=corpus_manifest["config"],
                    sha256={name: _sha256(a) for name, a in arrays.items()})
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, array in arrays.items():
        np.save(os.path.join(tmp, f"{name}.npy"), array)
    shutil.copy(os.path.join(corpus_dir, "tokenizer.json"), os.path.join(tmp, "tokenizer.json"))
    with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return manifest


def load_manifest(data_dir: str, missing_ok: bool = False) -> dict | None:
    path = os.path.join(data_dir, "manifest.json")
    if not os.path.exists(path):
        if missing_ok:
            return None
        raise FileNotFoundError(f"No fixed-token set at {data_dir!r}; build it with `python -m "
                                "papers.infinite_compute.data --config configs/infinite_compute/sweep.py`.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_fixed_token_set(data_dir: str) -> tuple[dict[str, np.ndarray], dict]:
    """({split: uint16 tokens}, manifest), each array checked against the manifest's sha256."""
    manifest = load_manifest(data_dir)
    arrays = {}
    for name, digest in manifest["sha256"].items():
        array = np.load(os.path.join(data_dir, f"{name}.npy"))
        if _sha256(array) != digest:
            raise ValueError(f"{data_dir}/{name}.npy does not match its manifest sha256; rebuild the set.")
        arrays[name] = array
    return arrays, manifest


def windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """int32[num_windows, seq_len + 1] cut with stride seq_len (each token a target once per epoch)."""
    count = (len(tokens) - 1) // seq_len
    if count < 1:
        raise ValueError(f"{len(tokens)} tokens make no window of {seq_len + 1}; lower data.seq_len.")
    index = np.arange(count)[:, None] * seq_len + np.arange(seq_len + 1)[None]
    return np.asarray(tokens, np.int32)[index]


def ensure_fixed_token_set(config) -> str:
    """Builds the corpus (core.data.corpus, from config.corpus) and the D-token set unless present."""
    data = config.data
    existing = load_manifest(data.dir, missing_ok=True)
    wanted = dict(train_tokens=int(data.train_tokens), eval_tokens=int(data.eval_tokens), seed=int(data.seed))
    if existing is not None and all(existing["settings"][k] == v for k, v in wanted.items()):
        return data.dir          # e.g. carried to a machine that has no corpus
    corpus_lib.build_corpus(config.corpus, data.corpus_dir)
    build_fixed_token_set(data.corpus_dir, data.dir, data.train_tokens, data.eval_tokens, data.seed)
    return data.dir


if __name__ == "__main__":
    import argparse

    from core import config as config_lib

    parser = argparse.ArgumentParser(description="Build the corpus and the fixed D-token set of a sweep config.")
    parser.add_argument("--config", default="configs/infinite_compute/sweep.py")
    args = parser.parse_args()
    cfg = config_lib.load_config(args.config)
    corpus_lib.build_corpus(cfg.corpus, cfg.data.corpus_dir)
    out = build_fixed_token_set(cfg.data.corpus_dir, cfg.data.dir, cfg.data.train_tokens, cfg.data.eval_tokens,
                                cfg.data.seed)
    print(json.dumps(out["counts"], indent=1))
