"""Every experiment config loads and validates; the runlocal of each trains two steps.

A config that sets `config.runner` is launched by that runner, not the trainer: it is only
loaded here, and its runlocal runs in the runner's own test (`OTHER_RUNNERS`)."""

import glob
import os

import jax
import numpy as np
import pytest

from ssl_gen.train import config_check, trainer
from tests.train.conftest import ROOT, load_config

# config.runner -> the test that runs such configs' runlocal variants.
OTHER_RUNNERS = {"estimator_toys": "tests/evals/test_estimator_toys.py",
                 "dvae_comparison": "tests/evals/test_dvae_comparison.py",
                 "chow_liu": "tests/evals/test_chow_liu.py",
                 "mi_bounds": "tests/runners/test_mi_bounds.py"}

EXPERIMENTS = sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
    if not os.path.basename(p).startswith(("_", "common")))


def _variants(path):
    """An experiment's variants, read from its docstring's "Variants:" block."""
    text = open(os.path.join(ROOT, path)).read()
    block = text.split("Variants:", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_every_variant_loads_and_validates(path):
    variants = _variants(path)
    assert "runlocal" in variants, f"{path} documents no runlocal variant"
    for arg in [None, *variants]:
        config = load_config(path, arg)
        if "runner" in config:  # not a trainer config
            assert config.runner in OTHER_RUNNERS, f"{path}: unknown runner {config.runner!r}"
            continue
        config_check.validate(config)


@pytest.mark.slow  # one end-to-end launch per config, its evaluations included
@pytest.mark.parametrize("path", EXPERIMENTS)
def test_runlocal_trains_two_steps(path, data_dir, tmp_path):
    config = load_config(path, "runlocal")
    if "runner" in config:
        pytest.skip(f"config.runner={config.runner!r}: runlocal runs in "
                    f"{OTHER_RUNNERS[config.runner]}")
    config.dataset.data_dir = data_dir
    config.num_train_steps = 2
    config.progress_bar = False
    final = trainer.train_and_evaluate(config, str(tmp_path))
    assert final["step"] == 2 and final["num_traces"] == 1
    assert all(np.isfinite(v) for v in final.values())


def test_binarized_variant_trains(data_dir, tmp_path):
    config = load_config("experiments/vae.py", "digits_binarized,runlocal")
    config.dataset.data_dir = data_dir
    config.num_train_steps = 2
    config.progress_bar = False
    final = trainer.train_and_evaluate(config, str(tmp_path))
    assert np.isfinite(final["nll_iwae16"]) and final["pixel_baseline_nll"] < 64 * np.log(2)


def test_bad_variant_arg_is_one_line():
    with pytest.raises(ValueError, match="config arg 'digitz' is not one of"):
        load_config("experiments/vae.py", "digitz")


def test_devices_are_faked():
    assert jax.device_count() == 8
