"""Runs a colab/ notebook headless at its small size (the notebooks' own env switches).

As a user would: in a fresh kernel whose working directory is a temporary folder, with only
the installed package importable (`ssl_gen`, and the configs it ships as
`ssl_gen_experiments`), never the repository root: a notebook that reached for
`experiments` or for files relative to the clone fails here as it would in Colab.
"""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run first, in the notebook's kernel: the set-up is the user's, not the repository's.
_CHECK_ISOLATED = f"""
import importlib.util, os, sys
_root = {ROOT!r}
assert os.path.realpath(os.getcwd()) != os.path.realpath(_root), os.getcwd()
assert not [p for p in sys.path if os.path.realpath(p or ".") == os.path.realpath(_root)], sys.path
assert importlib.util.find_spec("experiments") is None, "the repository root is importable"
assert importlib.util.find_spec("ssl_gen") is not None, "ssl_gen is not installed"
"""


def run_notebook(name: str, out_dir, monkeypatch, timeout: int = 300) -> None:
    """Executes colab/<name> in a fresh kernel in `out_dir`; a failing cell fails the test
    in one line.

    The notebook writes its figures into `out_dir` (SSL_GEN_NOTEBOOK_OUT) at the small size
    (SSL_GEN_NOTEBOOK_SMALL); compiles dominate, so XLA optimizations are off as in conftest.
    Its install cell is skipped (ssl_gen is installed, editable, in the test environment).
    """
    monkeypatch.setenv("SSL_GEN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("SSL_GEN_NOTEBOOK_OUT", str(out_dir))
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if p and os.path.realpath(p) != os.path.realpath(ROOT)]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    notebook = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(_CHECK_ISOLATED))
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(out_dir)}})
    try:
        client.execute()
    except Exception as e:  # CellExecutionError: name the cell, not a page of traceback
        pytest.fail(f"colab/{name} failed: {str(e).splitlines()[-1][:300]}")
