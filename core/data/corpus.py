"""Offline text corpus: deterministic documents from text installed on this machine, stored as TFDS.

Sources (sorted walks, so the same machine state gives the same bytes):
  * Python source of a pinned list of installed packages (test directories and test files skipped),
  * the CPython standard library of the running interpreter (test directories skipped),
  * optionally Linux kernel C from an extracted Debian linux-source tree (joins train / validation),
  * optionally English prose directories: an out-of-domain eval split `prose`, never trained on.
Code files are split into train / validation by a hash of their relative path, so no file is in both. The
store is a TFDS `GeneratorBasedBuilder` writing array_record (read back with `tfds.data_source`, no
TensorFlow), plus `manifest.json` with sources, versions, counts and sha256. `build_corpus` also trains the BPE
tokenizer on the train split and packs each split into a token stream (core.data.tokenizer), everything
written under a temp dir that is renamed into place at the end.
"""

from __future__ import annotations

import functools
import gzip
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

from core import errors
from core.data import tfds_scratch
from core.fileio import file_sha256

GENERATOR_VERSION = "1.1.0"
CODE_SPLITS = ("train", "validation")
PROSE_SPLIT = "prose"
KERNEL_SUFFIXES = (".c", ".h")
PROSE_SUFFIXES = (".txt", ".rst", ".md", ".pod", ".dz", ".gz")
PROSE_MAX_FILE_BYTES = 256_000_000
SKIP_DIRS = {"test", "tests", "testing", "_testing", "__pycache__", "idlelib", "site-packages", "ensurepip"}
# Installed in both the CPU venv and the GPU image, except torch and its dependencies sympy and networkx
# (GPU only) and transformers: missing packages are skipped and listed in the manifest.
DEFAULT_PACKAGES = ["numpy", "scipy", "jax", "flax", "optax", "chex", "orbax", "absl", "ml_collections", "etils",
                    "tensorflow_datasets", "grain", "brax", "mujoco", "matplotlib", "treescope", "jaxopt",
                    "trimesh", "rich", "PIL", "huggingface_hub", "torch", "transformers", "sympy", "networkx"]
_DISTRIBUTIONS = {"absl": "absl-py", "orbax": "orbax-checkpoint", "PIL": "pillow", "ml_collections": "ml-collections"}


def corpus_config(**overrides) -> ml_collections.ConfigDict:
    """The builder's settings; caps of 0 mean none. Unknown keys raise one ConfigError (a ValueError)."""
    defaults = dict(
        packages=list(DEFAULT_PACKAGES), include_stdlib=True, kernel_dir="", prose_dirs=[], max_bytes=0,
        max_files=0, max_file_bytes=1_000_000, validation_percent=2, vocab_size=32768, min_frequency=2)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise errors.ConfigError(f"Unknown corpus config keys {unknown}; known keys: {sorted(defaults)}.")
    defaults.update(overrides)
    return ml_collections.ConfigDict(defaults)


def _package_root(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return sorted(spec.submodule_search_locations)[0]


def _package_version(name: str) -> str:
    for dist in (_DISTRIBUTIONS.get(name, name), name, name.replace("_", "-")):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _is_test_file(name: str) -> bool:
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"


def _walk(root: str, keep) -> Iterator[str]:
    """Files under root accepted by keep(name), in sorted order, skipping test and hidden directories."""
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            if keep(name):
                yield os.path.join(directory, name)


def _python_file(name: str) -> bool:
    return name.endswith(".py") and not _is_test_file(name)


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
        files += [(package, os.path.join(package, os.path.relpath(p, root)), p) for p in _walk(root, _python_file)]
    if config.include_stdlib:
        stdlib = sysconfig.get_paths()["stdlib"]
        resolved["stdlib"] = stdlib
        resolved["python_version"] = sysconfig.get_python_version()
        files += [("stdlib", os.path.join("stdlib", os.path.relpath(p, stdlib)), p)
                  for p in _walk(stdlib, _python_file)]
    if config.kernel_dir:
        if not os.path.isdir(config.kernel_dir):
            raise errors.MissingSourceError(
                f"kernel_dir {config.kernel_dir!r} does not exist; extract linux-source-6.1 there "
                "(launch/fetch_offline_sources.sh) or set kernel_dir=''.")
        resolved["kernel_dir"] = os.path.abspath(config.kernel_dir)
        # asic_reg: 390 MB of generated register headers (the project notes on offline data sources).
        files += [("kernel", os.path.join("linux", os.path.relpath(p, config.kernel_dir)), p)
                  for p in _walk(config.kernel_dir, lambda n: n.endswith(KERNEL_SUFFIXES)) if "asic_reg" not in p]
    for prose_dir in config.prose_dirs:
        if not os.path.isdir(prose_dir):
            raise errors.MissingSourceError(f"prose dir {prose_dir!r} does not exist; extract it first "
                                            "(launch/fetch_offline_sources.sh) or drop it from prose_dirs.")
        resolved.setdefault("prose_dirs", []).append(os.path.abspath(prose_dir))
        name = os.path.basename(os.path.normpath(prose_dir))
        files += [(PROSE_SPLIT, os.path.join(PROSE_SPLIT, name, os.path.relpath(p, prose_dir)), p)
                  for p in _walk(prose_dir, lambda n: n.endswith(PROSE_SUFFIXES))]
    return files, resolved


def split_of(relative_path: str, validation_percent: int) -> str:
    """train / validation from a hash of the path: stable when other files come or go."""
    if relative_path.startswith(PROSE_SPLIT + os.sep):
        return PROSE_SPLIT
    digest = int(hashlib.sha256(relative_path.encode()).hexdigest()[:8], 16)
    return "validation" if digest % 100 < validation_percent else "train"


def _read_text(path: str, max_file_bytes: int) -> str | None:
    """The file as UTF-8 text (gunzipped for .gz/.dz), or None when empty, too large or not UTF-8."""
    try:
        if path.endswith((".gz", ".dz")):
            with gzip.open(path, "rb") as f:
                data = f.read(max_file_bytes + 1)
        else:
            if os.path.getsize(path) > max_file_bytes:
                return None
            with open(path, "rb") as f:
                data = f.read()
        if not data or len(data) > max_file_bytes:
            return None
        return data.decode("utf-8")
    except (UnicodeDecodeError, OSError, EOFError):
        return None


def read_documents(config: ml_collections.ConfigDict) -> tuple[dict[str, list[dict]], dict]:
    """Documents per split after the caps; raises one ValueError if a split would be empty."""
    files, resolved = list_sources(config)
    splits: dict[str, list[dict]] = {name: [] for name in CODE_SPLITS}
    if config.prose_dirs:
        splits[PROSE_SPLIT] = []
    bytes_by_source: dict[str, int] = {}
    # The caps hold for code (train + validation) and for prose separately, so a capped build keeps both.
    totals = {"code": [0, 0], PROSE_SPLIT: [0, 0]}   # bytes, files
    for source, relative, path in files:
        total = totals[PROSE_SPLIT if source == PROSE_SPLIT else "code"]
        if (config.max_bytes and total[0] >= config.max_bytes) or (
                config.max_files and total[1] >= config.max_files):
            continue
        # Prose files are whole books or dictionaries: only code drops large (generated) files.
        text = _read_text(path, PROSE_MAX_FILE_BYTES if source == PROSE_SPLIT else config.max_file_bytes)
        if text is None:
            continue
        size = len(text.encode())
        splits[split_of(relative, config.validation_percent)].append(dict(text=text, path=relative, source=source))
        bytes_by_source[source] = bytes_by_source.get(source, 0) + size
        total[0] += size
        total[1] += 1
    resolved["bytes_by_source"] = bytes_by_source
    if not splits["train"]:
        raise errors.ConfigError("The corpus sources yielded no text files; list installed packages in "
                                 "`packages` or set include_stdlib=True.")
    for name, docs in splits.items():
        if not docs:
            raise errors.ConfigError(f"No file fell into the {name} split; raise validation_percent, max_bytes "
                                     "or max_files, or check the prose dirs.")
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
            # disable_shuffling: records stay in walk order, the order of the packed token streams.
            return self.dataset_info_from_configs(disable_shuffling=True, features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(), "path": tfds.features.Text(), "source": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {name: self._generate_examples(docs) for name, docs in self._documents.items()}

        def _generate_examples(self, docs):
            for doc in docs:
                yield doc["path"], doc

        # TFDS prints "Downloading and preparing dataset ..." for every build; nothing is downloaded here.
        def _log_download_bytes(self):
            logging.info("corpus: writing %s documents to %s", self.name, self.data_dir)

        def _log_download_done(self):
            logging.info("corpus: documents written to %s", self.data_dir)

    return PaperclubCorpus


def _write_tfds(splits: dict[str, list[dict]], data_dir: str) -> None:
    import tensorflow_datasets as tfds
    tfds.disable_progress_bar()
    with tfds_scratch.contained_tempdirs():
        builder = _tfds_builder_class()(documents=splits, data_dir=data_dir,
                                        file_format=tfds.core.FileFormat.ARRAY_RECORD)
        builder.download_and_prepare()
    shutil.rmtree(os.path.join(data_dir, "downloads"), ignore_errors=True)  # empty; TFDS creates it


def _content_sha256(splits: dict[str, list[dict]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(splits):
        for doc in splits[name]:
            digest.update(f"{name}\0{doc['path']}\0".encode())
            digest.update(doc["text"].encode())
    return digest.hexdigest()


def config_fingerprint(config: ml_collections.ConfigDict) -> str:
    """Identifies what a build depends on besides the machine: the settings and the generator version."""
    payload = dict(config=config.to_dict(), generator_version=GENERATOR_VERSION)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _move_into_place(tmp: str, out_dir: str, fingerprint: str) -> None:
    """Renames the finished build to out_dir. Never replaces a corpus: if another process finished the same
    build first, ours is dropped; anything else that appeared there meanwhile is an error."""
    try:
        os.rename(tmp, out_dir)   # fails if out_dir exists and is not empty
        return
    except OSError:
        if os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
            os.rename(tmp, out_dir)
            return
    existing = load_manifest(out_dir, missing_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if not existing or existing.get("config_fingerprint") != fingerprint:
        raise errors.CorpusMismatchError(
            f"{out_dir} appeared while this corpus was being built and is not the same build; it was left as "
            "it is. Choose another corpus directory.")


def _describe_difference(built: dict, wanted: dict) -> str:
    keys = sorted(k for k in set(built) | set(wanted) if built.get(k) != wanted.get(k))
    shown = [f"{k}: built {built.get(k)!r:.80}, wanted {wanted.get(k)!r:.80}" for k in keys[:4]]
    return "; ".join(shown) + (f"; and {len(keys) - 4} more" if len(keys) > 4 else "")


def build_corpus(config: ml_collections.ConfigDict, out_dir: str, replace: bool = False) -> dict:
    """Builds documents (TFDS), tokenizer and packed token streams into out_dir; returns the manifest.

    Idempotent: a corpus in out_dir built from the same config (and generator version) is reused. One built
    from another config raises CorpusMismatchError naming both configs, unless `replace` (an explicit rebuild,
    never passed by training: the old corpus is deleted once the new one is in place). A non-empty out_dir
    that holds no corpus is always refused.
    """
    from core.data import tokenizer as tokenizer_lib

    config = corpus_config(**config.to_dict())
    out_dir = os.path.abspath(out_dir)
    existing = load_manifest(out_dir, missing_ok=True)
    fingerprint = config_fingerprint(config)
    if existing and existing.get("config_fingerprint") == fingerprint:
        return existing
    if existing and not replace:
        built = dict(existing.get("config", {}), generator_version=existing.get("generator_version"))
        wanted = dict(config.to_dict(), generator_version=GENERATOR_VERSION)
        raise errors.CorpusMismatchError(
            f"The corpus in {out_dir} was built from another corpus config ({_describe_difference(built, wanted)}; "
            f"fingerprint {existing.get('config_fingerprint')} vs {fingerprint}) and is left untouched. Point the "
            "run at another directory (--config.data.corpus_dir=NEW_DIR), or use the config it was built from "
            f"(its manifest.json), or delete {out_dir} yourself to rebuild it there.")
    if not existing and os.path.isdir(out_dir) and os.listdir(out_dir):
        raise errors.CorpusMismatchError(
            f"{out_dir} is not empty and holds no corpus (no manifest.json); choose another directory.")
    start = time.perf_counter()
    print(f"building the corpus in {out_dir} (reused by later runs)", flush=True)
    splits, resolved = read_documents(config)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        _write_tfds(splits, os.path.join(tmp, "tfds"))
        tokenizer = tokenizer_lib.train_tokenizer(
            (doc["text"] for doc in splits["train"]), config.vocab_size, config.min_frequency)
        tokenizer_lib.save_tokenizer(tokenizer, tmp)
        counts = {}
        for name, docs in splits.items():
            num_tokens = tokenizer_lib.write_token_stream(tokenizer, (d["text"] for d in docs),
                                                          os.path.join(tmp, f"tokens_{name}.bin"))
            num_bytes = sum(len(d["text"].encode()) for d in docs)
            counts[name] = dict(files=len(docs), bytes=num_bytes, tokens=num_tokens,
                                bytes_per_token=round(num_bytes / max(num_tokens - len(docs), 1), 3))
        manifest = dict(
            generator_version=GENERATOR_VERSION, config=config.to_dict(), config_fingerprint=fingerprint,
            sources=resolved, splits=counts, content_sha256=_content_sha256(splits),
            tokenizer_sha256=file_sha256(os.path.join(tmp, "tokenizer.json")),
            token_stream_sha256={name: file_sha256(os.path.join(tmp, f"tokens_{name}.bin")) for name in splits},
            vocab_size=tokenizer.get_vocab_size(), build_seconds=round(time.perf_counter() - start, 1))
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        if existing:   # replace=True: the old corpus goes only after the new one is complete
            old = f"{out_dir}.old-{os.getpid()}"
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            _move_into_place(tmp, out_dir, fingerprint)
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
        raise errors.MissingSourceError(f"No corpus at {corpus_dir!r} (manifest.json missing); build it with "
                                "`python -m launch.build_corpus --config configs/data/corpus.py:smoke --out DIR`.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_split(corpus_dir: str, split: str) -> dict:
    """The manifest entry of one split; one clear error if the corpus or the split is missing."""
    splits = load_manifest(corpus_dir)["splits"]
    if split not in splits:
        raise errors.ConfigError(f"The corpus at {corpus_dir!r} has no split {split!r}; it has {sorted(splits)}.")
    return splits[split]


def data_source(corpus_dir: str, split: str):
    """The documents of one split through `tfds.data_source` (random access, no TensorFlow)."""
    import tensorflow_datasets as tfds
    check_split(corpus_dir, split)
    return tfds.data_source("paperclub_corpus", split=split, data_dir=os.path.join(corpus_dir, "tfds"))


def ensure_corpus(config: ml_collections.ConfigDict, corpus_dir: str) -> dict:
    """Builds the corpus described by `config` (a `corpus_config` section, e.g. an LM config's `corpus`) into
    corpus_dir unless a matching build is there; returns its manifest."""
    return build_corpus(corpus_config(**config.to_dict()), corpus_dir)
