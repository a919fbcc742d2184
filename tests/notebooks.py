"""Runs a colab/ notebook headless at its small size (the notebooks' own env switches)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_notebook(name: str, out_dir, monkeypatch, timeout: int = 300) -> None:
    """Executes colab/<name> in a fresh kernel; a failing cell fails the test in one line.

    The notebook writes its figures into `out_dir` (SSL_GEN_NOTEBOOK_OUT) at the small size
    (SSL_GEN_NOTEBOOK_SMALL); compiles dominate, so XLA optimizations are off as in conftest.
    """
    monkeypatch.setenv("SSL_GEN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("SSL_GEN_NOTEBOOK_OUT", str(out_dir))
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": ROOT}})
    try:
        client.execute()
    except Exception as e:  # CellExecutionError: name the cell, not a page of traceback
        pytest.fail(f"colab/{name} failed: {str(e).splitlines()[-1][:300]}")
