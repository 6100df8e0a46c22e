"""Every notebook runs headless on CPU (smoke configs), and each .ipynb stays in sync with its jupytext .py.

A notebook `notebooks/<name>.py` reads its output directory from `<NAME>_WORKDIR`; the files listed in
EXPECTED_FILES must exist there afterwards.
"""

import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "notebooks", "*.py")))
EXPECTED_FILES = {"quickstart": ["loss.png"], "lewm": ["rollout.png", "surprise.png"],
                  "infinite_compute": ["fits.png"], "ssd": ["hit_rate_vs_fan_out.png"],
                  "dmpc": ["scores.png"]}
EXPECTED_OUTPUT = {"quickstart": "def "}


def test_there_are_notebooks():
    assert "quickstart" in NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ipynb_matches_its_jupytext_pair(name):
    jupytext = pytest.importorskip("jupytext")
    ipynb = os.path.join(ROOT, "notebooks", f"{name}.ipynb")
    assert os.path.exists(ipynb), f"notebooks/{name}.ipynb is missing: run `jupytext --sync notebooks/{name}.py`."
    from_py = jupytext.read(os.path.join(ROOT, "notebooks", f"{name}.py"))
    from_ipynb = jupytext.read(ipynb)
    assert [c.source for c in from_py.cells] == [c.source for c in from_ipynb.cells], (
        f"notebooks/{name}.ipynb is stale: run `jupytext --sync notebooks/{name}.py`.")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    workdir = tmp_path / name
    monkeypatch.setenv(f"{name.upper()}_WORKDIR", str(workdir))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONPATH", ROOT)
    notebook = nbformat.read(os.path.join(ROOT, "notebooks", f"{name}.ipynb"), as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": ROOT}})
    client.execute()
    outputs = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    assert EXPECTED_OUTPUT.get(name, "") in outputs
    for filename in EXPECTED_FILES.get(name, []):
        assert os.path.exists(workdir / filename), f"notebook {name} did not write {filename}"
