"""Offline corpus: deterministic bytes, split by file, consistent manifest, caps, prose split, tokenizer, errors."""

import gzip
import json
import os
import tempfile

import numpy as np
import pytest

from core.data import corpus, tokenizer as tokenizer_lib

TINY = dict(packages=["absl"], include_stdlib=True, max_bytes=600_000, max_file_bytes=100_000,
            validation_percent=10, vocab_size=600)


def _files(directory):
    """{relative path: bytes} of every file under directory."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = f.read()
    return found


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("c") / "tiny")
    return out, corpus.build_corpus(corpus.corpus_config(**TINY), out)


def test_same_input_gives_the_same_bytes(tiny_corpus, tmp_path):
    out, manifest = tiny_corpus
    temp_before = set(os.listdir(tempfile.gettempdir()))
    again = corpus.build_corpus(corpus.corpus_config(**TINY), str(tmp_path / "again"))
    # TFDS makes an empty temp dir per new builder; the build must not leave it behind.
    assert not [n for n in set(os.listdir(tempfile.gettempdir())) - temp_before if "tfds" in n]
    first, second = _files(out), _files(tmp_path / "again")
    assert sorted(first) == sorted(second)
    assert any(name.endswith("array_record-00000-of-00001") for name in first)
    for name in first:
        if name != "manifest.json":   # it records the build time
            assert first[name] == second[name], name
    manifest, again = dict(manifest), dict(again)
    manifest.pop("build_seconds"), again.pop("build_seconds")
    assert manifest == again


def test_split_is_by_file_and_manifest_counts_match(tiny_corpus):
    out, manifest = tiny_corpus
    docs = {split: list(corpus.data_source(out, split)) for split in ("train", "validation")}
    paths = {split: {doc["path"].decode() for doc in docs[split]} for split in docs}
    assert paths["train"] and paths["validation"] and not paths["train"] & paths["validation"]
    assert all(corpus.split_of(p, TINY["validation_percent"]) == s for s in paths for p in paths[s])
    eos = tokenizer_lib.eos_id(tokenizer_lib.load_tokenizer(out))
    for split in ("train", "validation"):
        counts = manifest["splits"][split]
        assert counts["files"] == len(docs[split])
        assert counts["bytes"] == sum(len(doc["text"]) for doc in docs[split])
        stream = np.asarray(tokenizer_lib.open_token_stream(os.path.join(out, f"tokens_{split}.bin")))
        assert counts["tokens"] == len(stream) and int((stream == eos).sum()) == counts["files"]
    total = manifest["splits"]["train"]["bytes"] + manifest["splits"]["validation"]["bytes"]
    assert total == sum(manifest["sources"]["bytes_by_source"].values()) and total >= TINY["max_bytes"]
    assert manifest["sources"]["packages"]["absl"] != "unknown"


def test_documents_are_the_installed_files_without_tests(tiny_corpus):
    out, _ = tiny_corpus
    import absl
    absl_root = os.path.dirname(absl.__file__)
    docs = list(corpus.data_source(out, "train")) + list(corpus.data_source(out, "validation"))
    for doc in docs:
        path = doc["path"].decode()
        parts = path.split(os.sep)
        assert not {"test", "tests", "testing"} & set(parts) and not parts[-1].startswith("test_"), path
        if parts[0] == "absl":
            with open(os.path.join(absl_root, *parts[1:]), "rb") as f:
                assert f.read() == doc["text"]


def test_caps_and_missing_packages_are_recorded(tmp_path):
    config = corpus.corpus_config(packages=["no_such_package_xyz", "absl"], include_stdlib=True, max_files=30,
                                  validation_percent=20, vocab_size=400)
    manifest = corpus.build_corpus(config, str(tmp_path / "capped"))
    assert manifest["sources"]["missing_packages"] == ["no_such_package_xyz"]
    assert manifest["splits"]["train"]["files"] + manifest["splits"]["validation"]["files"] == 30
    assert set(manifest["sources"]["bytes_by_source"]) == {"absl", "stdlib"}   # absl has 15 files


def test_prose_is_a_separate_split_never_trained_on(tmp_path):
    prose = tmp_path / "books"
    prose.mkdir()
    (prose / "a.txt").write_text("It was the best of times, it was the worst of times.\n" * 50)
    with gzip.open(prose / "dict.dz", "wt", encoding="utf-8") as f:
        f.write("naïve (adj.): showing a lack of experience.\n" * 50)
    (prose / "ignored.index").write_text("not prose")
    config = corpus.corpus_config(packages=["absl"], include_stdlib=False, prose_dirs=[str(prose)], max_files=10,
                                  validation_percent=30, vocab_size=400)   # the cap holds for code and prose apart
    out = str(tmp_path / "with_prose")
    manifest = corpus.build_corpus(config, out)
    docs = {d["path"].decode(): d["text"].decode() for d in corpus.data_source(out, "prose")}
    assert sorted(docs) == ["prose/books/a.txt", "prose/books/dict.dz"] and "naïve" in docs["prose/books/dict.dz"]
    code = {d["path"].decode() for s in ("train", "validation") for d in corpus.data_source(out, s)}
    assert not any(p.startswith("prose") for p in code)
    assert manifest["splits"]["prose"]["files"] == 2 and manifest["splits"]["prose"]["tokens"] > 0
    assert manifest["splits"]["train"]["files"] + manifest["splits"]["validation"]["files"] == 10


def test_reuse_rebuild_and_refusal(tiny_corpus, tmp_path):
    out, manifest = tiny_corpus
    assert corpus.build_corpus(corpus.corpus_config(**TINY), out) == manifest      # reused, not rebuilt
    other = str(tmp_path / "other")
    capped = lambda max_bytes: corpus.corpus_config(**{**TINY, "max_bytes": max_bytes, "validation_percent": 30})
    first = corpus.build_corpus(capped(400_000), other)
    with pytest.raises(ValueError, match="built from another corpus config"):   # never replaced implicitly
        corpus.build_corpus(capped(500_000), other)
    assert corpus.load_manifest(other) == first
    second = corpus.build_corpus(capped(500_000), other, replace=True)
    assert second["splits"]["train"]["bytes"] > first["splits"]["train"]["bytes"]
    assert corpus.load_manifest(other) == second and sorted(os.listdir(tmp_path)) == ["other"]
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="holds no corpus"):
        corpus.build_corpus(corpus.corpus_config(**TINY), str(tmp_path / "precious"))
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_tokenizer_round_trips_unicode_and_is_deterministic(tiny_corpus):
    out, manifest = tiny_corpus
    tok = tokenizer_lib.load_tokenizer(out)
    text = "def f(x):\n    return 'héllo — 世界 🙂\\t'  # ok\n"
    ids = tokenizer_lib.encode(tok, text, append_eos=True)
    assert ids.dtype == np.int32 and ids[-1] == tokenizer_lib.eos_id(tok) and ids.max() < manifest["vocab_size"]
    assert tokenizer_lib.decode(tok, ids) == text
    texts = [d["text"].decode() for d in corpus.data_source(out, "train")]
    json_a = tokenizer_lib.train_tokenizer(texts, 600).to_str()
    json_b = tokenizer_lib.train_tokenizer(texts, 600).to_str()
    assert json_a == json_b
    with open(os.path.join(out, "tokenizer.json")) as f:
        assert json.loads(f.read())["model"]["vocab"] == json.loads(json_a)["model"]["vocab"]


def test_bad_inputs_give_one_clear_error_and_no_partial_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="build it with"):
        corpus.load_manifest(str(tmp_path / "missing"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        corpus.data_source(str(tmp_path / "empty_dir"), "train")
    nothing = corpus.corpus_config(packages=["no_such_package_xyz"], include_stdlib=False)
    with pytest.raises(ValueError, match="no text files"):
        corpus.build_corpus(nothing, str(tmp_path / "nothing"))
    no_validation = corpus.corpus_config(packages=["absl"], include_stdlib=False, validation_percent=0)
    with pytest.raises(ValueError, match="validation split"):
        corpus.build_corpus(no_validation, str(tmp_path / "no_validation"))
    with pytest.raises(FileNotFoundError, match="kernel_dir"):
        corpus.build_corpus(corpus.corpus_config(kernel_dir=str(tmp_path / "nope")), str(tmp_path / "k"))
    with pytest.raises(ValueError, match="Unknown corpus config keys"):
        corpus.corpus_config(max_byte=10)
    assert sorted(os.listdir(tmp_path)) == ["empty_dir"]   # nothing half-written


def test_config_variants():
    from configs.data import corpus as corpus_configs
    smoke = corpus_configs.get_config("smoke")
    assert smoke.vocab_size == 2048 and 0 < smoke.max_bytes <= 5_000_000
    assert corpus_configs.get_config(None).vocab_size == 32768 and corpus_configs.get_config(None).max_bytes == 0
    large = corpus_configs.get_config("large,kernel_dir=/src/linux,prose_dirs=/a:/b,max_files=7")
    assert large.kernel_dir == "/src/linux" and list(large.prose_dirs) == ["/a", "/b"] and large.max_files == 7
    with pytest.raises(ValueError, match="Unknown corpus variant"):
        corpus_configs.get_config("huge")
