"""colab/estimators.ipynb runs headless, at its small size, without an error, and draws its
plots (it uses only the public API, so this also checks that the API it shows still works)."""

import pytest

from tests.notebooks import run_notebook


@pytest.mark.slow  # a kernel process and ~15 compiles: ~20 s
def test_notebook_runs_headless(tmp_path, monkeypatch):
    run_notebook("estimators.ipynb", tmp_path, monkeypatch)
    images = {p.name for p in tmp_path.iterdir()}
    assert {"categorical.png", "gaussian_cos.png", "bernoulli.png"} <= images, images
