"""Offline corpus: deterministic bytes, split by file, consistent manifest, tokenizer round trip, clear errors."""

import hashlib
import json
import os

import numpy as np
import pytest

from core.data import corpus, lm_pipeline, tokenizer as tokenizer_lib

TINY = dict(packages=["absl"], include_stdlib=True, max_bytes=600_000, max_file_bytes=100_000,
            validation_percent=10, vocab_size=600)


def _digest(directory):
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if name == "dataset_info.json" or name.endswith(".json") and "tfds" in root:
                continue  # TFDS metadata records the absolute build path
            digest.update(name.encode())
            digest.update(open(os.path.join(root, name), "rb").read())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("c") / "tiny")
    return out, corpus.build_corpus(corpus.corpus_config(**TINY), out)


def test_same_input_gives_the_same_bytes(tiny_corpus, tmp_path):
    out, manifest = tiny_corpus
    again = corpus.build_corpus(corpus.corpus_config(**TINY), str(tmp_path / "again"))
    assert again["content_sha256"] == manifest["content_sha256"]
    assert again["tokenizer_sha256"] == manifest["tokenizer_sha256"]
    for name in ("tokens_train.bin", "tokens_validation.bin", "tokenizer.json"):
        assert open(os.path.join(out, name), "rb").read() == open(tmp_path / "again" / name, "rb").read()


def test_split_is_by_file_and_manifest_counts_match(tiny_corpus):
    out, manifest = tiny_corpus
    paths = {split: {doc["path"] for doc in corpus.data_source(out, split)} for split in ("train", "validation")}
    assert paths["train"] and paths["validation"] and not paths["train"] & paths["validation"]
    for split in ("train", "validation"):
        assert manifest["splits"][split]["files"] == len(paths[split])
        stream = tokenizer_lib.open_token_stream(os.path.join(out, f"tokens_{split}.bin"))
        assert manifest["splits"][split]["tokens"] == len(stream)
    eos = tokenizer_lib.eos_id(tokenizer_lib.load_tokenizer(out))
    train = tokenizer_lib.open_token_stream(os.path.join(out, "tokens_train.bin"))
    assert int((np.asarray(train) == eos).sum()) == manifest["splits"]["train"]["files"]
    assert manifest["sources"]["packages"]["absl"] != "unknown"


def test_tokenizer_round_trips_unicode(tiny_corpus):
    tok = tokenizer_lib.load_tokenizer(tiny_corpus[0])
    text = "def f(x):\n    return 'héllo — 世界 🙂'  # ok\n"
    assert tok.decode(tok.encode(text).ids) == text


def test_pipeline_packs_the_stream_in_order_and_resumes(tiny_corpus):
    out, _ = tiny_corpus
    stream = np.asarray(tokenizer_lib.open_token_stream(os.path.join(out, "tokens_validation.bin")))
    val = lm_pipeline.make_lm_iterator(out, "validation", 32, 4, seed=0, num_epochs=1)
    first = next(val)["tokens"]
    assert first.shape == (4, 33) and first.dtype == np.int32
    np.testing.assert_array_equal(first[0], stream[:33])
    np.testing.assert_array_equal(first[1], stream[32:65])   # stride seq_len: windows chain
    train = lm_pipeline.make_lm_iterator(out, "train", 32, 4, seed=1)
    for _ in range(3):
        next(train)
    state = train.get_state()
    rest = [next(train)["tokens"] for _ in range(3)]
    resumed = lm_pipeline.make_lm_iterator(out, "train", 32, 4, seed=1)
    resumed.set_state(json.loads(json.dumps(state)))
    for want in rest:
        np.testing.assert_array_equal(next(resumed)["tokens"], want)
    other_seed = next(lm_pipeline.make_lm_iterator(out, "train", 32, 4, seed=2))["tokens"]
    assert not np.array_equal(other_seed, next(lm_pipeline.make_lm_iterator(out, "train", 32, 4, seed=1))["tokens"])


def test_processes_get_disjoint_windows(tmp_path):
    # A stream of distinct tokens, so windows are identified by their content.
    stream = np.arange(2000, dtype=np.uint16)
    stream.tofile(tmp_path / "tokens_train.bin")
    (tmp_path / "tokens_train.bin.json").write_text(json.dumps({"dtype": "uint16", "num_tokens": 2000}))
    rows = []
    for index in range(2):
        ds = lm_pipeline.make_lm_dataset(str(tmp_path), "train", 32, 2, seed=0, num_epochs=1,
                                         process_index=index, process_count=2)
        rows.append({int(r[0]) for batch in ds for r in batch["tokens"]})
    assert len(rows[0]) >= 28 and len(rows[1]) >= 28 and not rows[0] & rows[1]


def test_bad_inputs_give_one_clear_error_and_no_partial_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="build it with"):
        corpus.load_manifest(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="rebuild the corpus"):
        lm_pipeline.make_lm_iterator(str(tmp_path / "missing"), "train", 8, 2, 0)
    empty = corpus.corpus_config(packages=["no_such_package_xyz"], include_stdlib=False)
    with pytest.raises(ValueError, match="no text files"):
        corpus.build_corpus(empty, str(tmp_path / "empty"))
    assert not os.listdir(tmp_path) or all(not p.startswith("empty") for p in os.listdir(tmp_path))
    with pytest.raises(FileNotFoundError, match="kernel_dir"):
        corpus.build_corpus(corpus.corpus_config(kernel_dir=str(tmp_path / "nope")), str(tmp_path / "k"))


def test_too_small_split_is_one_clear_error(tiny_corpus):
    with pytest.raises(ValueError, match="fewer than one batch"):
        lm_pipeline.make_lm_iterator(tiny_corpus[0], "validation", 4096, 64, seed=0)
