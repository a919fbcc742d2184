"""colab/discrete_vae.ipynb runs headless at its small size (a two-estimator, 20-step sweep
through `compare.run`, gradient statistics at a restored run's parameters) without an error
and saves its figures and the sweep's report."""

import os

import pytest

from tests.notebooks import run_notebook

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # a kernel, two 20-step training runs and their compiles: ~40 s
def test_dvae_notebook_runs_headless(tmp_path, monkeypatch):
    if not os.environ.get("TFDS_DATA_DIR"):  # not the user's data dir: digits build in ~2 s
        monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    run_notebook("discrete_vae.ipynb", tmp_path, monkeypatch, timeout=240)
    for name in ("dvae_curves.png", "dvae_gradient_stats.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
    sweep = tmp_path / "dvae_sweep_small"
    assert "| rloo |" in (sweep / "report.md").read_text()
    assert (sweep / "plots" / "log_variance_on_each_trajectory.png").exists()
