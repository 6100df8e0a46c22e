"""Offline text corpus: deterministic documents from text installed on this machine, stored as TFDS.

Sources (sorted walks, so the same machine state gives the same bytes):
  * Python source of a pinned list of installed packages (test directories skipped),
  * the CPython standard library of the running interpreter (test directories skipped),
  * optionally Linux kernel C from an extracted Debian linux-source tree and English prose directories.
Files are split into train / validation by a hash of their relative path, so no file is in both. The store is
a TFDS `GeneratorBasedBuilder` writing array_record (read back with `tfds.data_source`, no TensorFlow), plus
`manifest.json` with sources, versions, counts and sha256. `build_corpus` also trains the BPE tokenizer and
packs each split into a token stream (core.data.tokenizer), everything under a temp dir renamed at the end.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sysconfig
import time
from typing import Iterator

import ml_collections
from absl import logging

GENERATOR_VERSION = "1.0.0"
TEXT_SUFFIXES = {"python": (".py",), "kernel": (".c", ".h"), "prose": (".txt", ".rst", ".md", ".pod", "")}
SKIP_DIRS = {"test", "tests", "testing", "__pycache__", "idlelib", "site-packages", "_testing"}


def corpus_config(**overrides) -> ml_collections.ConfigDict:
    defaults = dict(
        packages=["numpy", "scipy", "jax", "flax", "optax", "chex", "orbax", "absl", "ml_collections", "etils",
                  "tensorflow_datasets", "grain", "brax", "mujoco", "matplotlib", "torch", "transformers"],
        include_stdlib=True, kernel_dir="", prose_dirs=[], max_bytes=0, max_file_bytes=1_000_000,
        validation_percent=2, vocab_size=32768, min_frequency=2)
    defaults.update(overrides)
    return ml_collections.ConfigDict(defaults)


def _package_root(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return sorted(spec.submodule_search_locations)[0]


def _package_version(name: str) -> str:
    for dist in (name, name.replace("_", "-"), {"absl": "absl-py", "orbax": "orbax-checkpoint",
                                                 "mujoco": "mujoco"}.get(name, name)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _walk(root: str, suffixes: tuple[str, ...]) -> Iterator[str]:
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(suffixes) if "" not in suffixes else "." not in name or name.endswith(suffixes):
                yield os.path.join(directory, name)


def list_sources(config: ml_collections.ConfigDict) -> tuple[list[tuple[str, str, str]], dict]:
    """[(source, relative_path, absolute_path)] in a fixed order, plus what each source resolved to."""
    files, resolved = [], {"packages": {}, "missing_packages": []}
    for package in config.packages:
        root = _package_root(package)
        if root is None:
            logging.warning("corpus: package %s is not installed; skipped", package)
            resolved["missing_packages"].append(package)
            continue
        resolved["packages"][package] = _package_version(package)
        files += [("python", os.path.join(package, os.path.relpath(p, root)), p)
                  for p in _walk(root, TEXT_SUFFIXES["python"])]
    if config.include_stdlib:
        stdlib = sysconfig.get_paths()["stdlib"]
        resolved["stdlib"] = stdlib
        files += [("python", os.path.join("stdlib", os.path.relpath(p, stdlib)), p)
                  for p in _walk(stdlib, TEXT_SUFFIXES["python"])]
    if config.kernel_dir:
        if not os.path.isdir(config.kernel_dir):
            raise FileNotFoundError(f"kernel_dir {config.kernel_dir!r} does not exist; extract linux-source-6.1 "
                                    "there (launch/fetch_offline_sources.sh) or set kernel_dir=''.")
        files += [("kernel", os.path.join("linux", os.path.relpath(p, config.kernel_dir)), p)
                  for p in _walk(config.kernel_dir, TEXT_SUFFIXES["kernel"]) if "asic_reg" not in p]
    for prose_dir in config.prose_dirs:
        if not os.path.isdir(prose_dir):
            raise FileNotFoundError(f"prose dir {prose_dir!r} does not exist.")
        files += [("prose", os.path.join("prose", os.path.basename(prose_dir), os.path.relpath(p, prose_dir)), p)
                  for p in _walk(prose_dir, TEXT_SUFFIXES["prose"])]
    return files, resolved


def split_of(relative_path: str, validation_percent: int) -> str:
    digest = int(hashlib.sha256(relative_path.encode()).hexdigest()[:8], 16)
    return "validation" if digest % 100 < validation_percent else "train"


def read_documents(config: ml_collections.ConfigDict) -> tuple[dict[str, list[dict]], dict]:
    """Documents per split after size caps; raises one ValueError if nothing usable is found."""
    files, resolved = list_sources(config)
    splits: dict[str, list[dict]] = {"train": [], "validation": []}
    total = 0
    for source, relative, path in files:
        if config.max_bytes and total >= config.max_bytes:
            break
        try:
            size = os.path.getsize(path)
            if size == 0 or size > config.max_file_bytes:
                continue
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        splits[split_of(relative, config.validation_percent)].append(
            dict(text=text, path=relative, source=source))
        total += len(text.encode())
    if not splits["train"]:
        raise ValueError("The corpus sources yielded no text files; list installed packages in `packages` or "
                         "set include_stdlib=True.")
    if not splits["validation"]:
        raise ValueError("No file fell into the validation split; raise validation_percent or max_bytes.")
    return splits, resolved


@functools.cache
def _tfds_builder_class():
    import numpy as np  # noqa: F401  (tfds needs numpy loaded first)
    import tensorflow_datasets as tfds

    class PaperclubCorpus(tfds.core.GeneratorBasedBuilder):
        """Text documents of the offline corpus: text, path, source."""

        VERSION = tfds.core.Version(GENERATOR_VERSION)

        def __init__(self, *, documents=None, **kwargs):
            self._documents = documents
            super().__init__(**kwargs)

        def _info(self):
            return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(), "path": tfds.features.Text(), "source": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {name: self._generate_examples(docs) for name, docs in self._documents.items()}

        def _generate_examples(self, docs):
            for doc in docs:
                yield doc["path"], doc

    return PaperclubCorpus


def tfds_progress_off() -> None:
    import tensorflow_datasets as tfds
    tfds.disable_progress_bar()


def _content_sha256(splits: dict[str, list[dict]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(splits):
        for doc in splits[name]:
            digest.update(f"{name}\0{doc['path']}\0".encode())
            digest.update(doc["text"].encode())
    return digest.hexdigest()


def _config_fingerprint(config: ml_collections.ConfigDict) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def build_corpus(config: ml_collections.ConfigDict, out_dir: str) -> dict:
    """Builds documents (TFDS), tokenizer and packed token streams into out_dir; reuses a matching build."""
    from core.data import tokenizer as tokenizer_lib

    out_dir = os.path.abspath(out_dir)
    existing = load_manifest(out_dir, missing_ok=True)
    if existing and existing.get("config_fingerprint") == _config_fingerprint(config):
        return existing
    if existing:
        raise ValueError(f"{out_dir} holds a corpus built from another config; remove it or choose another dir.")
    start = time.perf_counter()
    splits, resolved = read_documents(config)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        builder = _tfds_builder_class()(documents=splits, data_dir=os.path.join(tmp, "tfds"),
                                        file_format="array_record")
        tfds_progress_off()
        builder.download_and_prepare()
        tokenizer = tokenizer_lib.train_tokenizer(
            (doc["text"] for doc in splits["train"]), config.vocab_size, config.min_frequency)
        tokenizer_lib.save_tokenizer(tokenizer, tmp)
        counts = {}
        for name, docs in splits.items():
            num_tokens = tokenizer_lib.write_token_stream(tokenizer, (d["text"] for d in docs),
                                                          os.path.join(tmp, f"tokens_{name}.bin"))
            counts[name] = dict(files=len(docs), bytes=sum(len(d["text"].encode()) for d in docs),
                                tokens=num_tokens)
        manifest = dict(
            generator_version=GENERATOR_VERSION, config=config.to_dict(),
            config_fingerprint=_config_fingerprint(config), sources=resolved, splits=counts,
            content_sha256=_content_sha256(splits),
            tokenizer_sha256=hashlib.sha256(open(os.path.join(tmp, "tokenizer.json"), "rb").read()).hexdigest(),
            vocab_size=tokenizer.get_vocab_size(), build_seconds=round(time.perf_counter() - start, 1))
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("corpus built in %s: %s", out_dir, counts)
    return manifest


def load_manifest(corpus_dir: str, missing_ok: bool = False) -> dict | None:
    path = os.path.join(corpus_dir, "manifest.json")
    if not os.path.exists(path):
        if missing_ok:
            return None
        raise FileNotFoundError(f"No corpus at {corpus_dir!r} (manifest.json missing); build it with "
                                "`python -m launch.build_corpus --config configs/data/corpus.py:smoke --out DIR`.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def data_source(corpus_dir: str, split: str):
    """The documents of one split through `tfds.data_source` (random access, no TensorFlow)."""
    import tensorflow_datasets as tfds
    load_manifest(corpus_dir)
    return tfds.data_source("paperclub_corpus", split=split, data_dir=os.path.join(corpus_dir, "tfds"))


def ensure_corpus(variant: str, corpus_dir: str) -> dict:
    """Builds the `configs/data/corpus.py` variant into corpus_dir unless a matching build is there."""
    from configs.data import corpus as corpus_configs
    return build_corpus(corpus_configs.get_config(variant), corpus_dir)
