"""colab/spanning_trees.ipynb runs headless, at its small size, without an error, and draws its
plots and its Chow-Liu report (public API only)."""

import pytest

from tests.notebooks import run_notebook


@pytest.mark.slow  # a kernel process, Wilson/MST/estimator compiles and a short Chow-Liu run
def test_notebook_runs_headless(tmp_path, monkeypatch):
    run_notebook("spanning_trees.ipynb", tmp_path, monkeypatch)
    assert (tmp_path / "pam_vs_gibbs.png").exists()
    chow_liu = tmp_path / "chow_liu"
    assert {"report.md", "rows.json", "objective.png", "variance.png"} <= {
        p.name for p in chow_liu.iterdir()}
