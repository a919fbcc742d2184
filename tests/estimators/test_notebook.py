"""colab/estimators.ipynb runs headless, at its small size, without an error, and draws its
plots (it uses only the public API, so this also checks that the API it shows still works)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(ROOT, "colab", "estimators.ipynb")


@pytest.mark.slow  # a kernel process and ~15 compiles: ~20 s
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
        pytest.fail(f"colab/estimators.ipynb failed: {str(e).splitlines()[-1][:300]}")
    images = {p.name for p in tmp_path.iterdir()}
    assert {"categorical.png", "gaussian_cos.png", "bernoulli.png"} <= images, images
