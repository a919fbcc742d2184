"""colab/mae.ipynb runs headless at its small size (a tiny MAE pre-trained a few steps, its
reconstruction grid, the probes against raw pixels and random init, a fine-tune through
init_from) and writes its summary with every probe's baselines."""

import json
import os

import pytest

from tests.notebooks import run_notebook


@pytest.mark.slow  # a kernel, a 20-step pre-training with its probes, a 10-step fine-tune
def test_mae_notebook_runs_headless(tmp_path, monkeypatch):
    if not os.environ.get("TFDS_DATA_DIR"):  # not the user's data dir: digits build in ~2 s
        monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    run_notebook("mae.ipynb", tmp_path, monkeypatch, timeout=400)
    summary = json.loads((tmp_path / "mae_notebook_summary.json").read_text())
    pre, ft = summary["pretrain"], summary["finetune"]
    for key in ("fewshot1_acc", "knn10_acc", "linear_probe_acc"):
        for suffix in ("", "_pixels", "_random_init"):
            assert 0.0 <= pre[key + suffix] <= 1.0, key + suffix
    assert pre["step"] == 20 and ft["step"] == 10
    grid = tmp_path / "mae_runlocal" / "plots" / "mae_reconstructions_latest.png"
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
