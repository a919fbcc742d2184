"""colab/spanning_trees.ipynb runs headless, at its small size, without an error, and draws its
plots (it uses only the public API, so this also checks that the API it shows still works)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(ROOT, "colab", "spanning_trees.ipynb")


@pytest.mark.slow  # a kernel process, Wilson/MST/estimator compiles and a short Chow-Liu run
def test_notebook_runs_headless(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_GEN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("SSL_GEN_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # compile-bound, as in conftest
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": ROOT}})
    try:
        client.execute()
    except Exception as e:  # CellExecutionError: name the cell, not a page of traceback
        pytest.fail(f"colab/spanning_trees.ipynb failed: {str(e).splitlines()[-1][:300]}")
    assert (tmp_path / "pam_vs_gibbs.png").exists()
    chow_liu = tmp_path / "chow_liu"
    assert {"report.md", "rows.json", "objective.png", "variance.png"} <= {
        p.name for p in chow_liu.iterdir()}
