"""The documented CLI run on 8 fake CPU devices, a few hundred steps: no XLA collective
rendezvous timeout (it aborted at step ~40 before the trainer completed each step on CPU
before dispatching the next; see `sync_each_step` in ssl_gen/train/trainer.py)."""

import json
import os
import subprocess
import sys

import pytest

from tests.train.conftest import ROOT

STEPS = 200


@pytest.mark.slow
def test_the_digits_vae_trains_on_eight_devices_from_the_command_line(data_dir, tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "TFDS_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)  # the optimized programs, as users run
    cmd = [sys.executable, "-m", "ssl_gen.train.main", "--config=experiments/vae.py:digits",
           f"--workdir={workdir}", f"--config.num_train_steps={STEPS}",
           "--config.progress_bar=False", "--config.evals.iwae.every_steps=100",
           "--config.evals.iwae.final_kwargs.num_samples=100",
           "--config.evals.iwae.final_kwargs.chunk_size=100",
           "--config.evals.images.every_steps=0"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "rendezvous" not in out, out[-3000:]
    with open(workdir / "final_metrics.json") as f:
        assert json.load(f)["step"] == STEPS
