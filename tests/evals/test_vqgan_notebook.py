"""colab/vqgan.ipynb runs headless at its small size (the digits codebook with and without
restart, a tiny VQGAN on slices of the photo crops, the GPT prior over its codes loaded
through init_from) and writes its summary: usage, reconstruction, the prior's NLL with its
baselines, the samples' MMD²."""

import json
import math
import os

import pytest

from tests.notebooks import run_notebook


@pytest.mark.slow  # a kernel and four tiny trainings (two VQ-VAEs, a VQGAN, a prior)
def test_vqgan_notebook_runs_headless(tmp_path, monkeypatch):
    if not os.environ.get("TFDS_DATA_DIR"):  # not the user's data dir: both sets build in s
        monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    run_notebook("vqgan.ipynb", tmp_path, monkeypatch, timeout=500)
    summary = json.loads((tmp_path / "vqgan_notebook_summary.json").read_text())
    for arg in ("default", "no_restart"):
        assert 1 <= summary["vqvae"][arg]["codes_used"] <= 16, arg  # runlocal: K = 16
    stage1, stage2 = summary["stage1"], summary["stage2"]
    assert stage1["step"] == 10 and 0.0 <= stage1["ssim"] <= 1.0 and stage1["psnr"] > 0
    assert stage2["step"] == 10
    # 64 codes of K = 16 per image: the uniform baseline is exact, the learned ones finite.
    assert math.isclose(stage2["nll_nats_per_image_uniform"], 64 * math.log(16), rel_tol=1e-6)
    for key in ("nll_nats_per_image", "nll_nats_per_image_unigram",
                "nll_nats_per_image_position_unigram", "mmd2", "mmd2_train_floor"):
        assert math.isfinite(stage2[key]), key
    for path in ("vqgan/plots/reconstructions_latest.png", "codebook_usage.png",
                 "vq_prior/plots/prior_samples_latest.png"):
        assert (tmp_path / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
