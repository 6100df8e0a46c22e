"""The quickstart notebook runs headless on CPU, and its .ipynb stays in sync with the jupytext .py."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")


def test_ipynb_matches_its_jupytext_pair():
    jupytext = pytest.importorskip("jupytext")
    from_py = jupytext.read(os.path.join(ROOT, "notebooks", "quickstart.py"))
    from_ipynb = jupytext.read(NOTEBOOK)
    assert [c.source for c in from_py.cells] == [c.source for c in from_ipynb.cells], (
        "notebooks/quickstart.ipynb is stale: run `jupytext --sync notebooks/quickstart.py`.")


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("QUICKSTART_WORKDIR", str(tmp_path / "quickstart"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONPATH", ROOT)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": ROOT}})
    client.execute()
    outputs = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    assert "def " in outputs
    assert os.path.exists(tmp_path / "quickstart" / "loss.png")
