"""Both stages end to end (slow): a tiny VQ-VAE run, then the prior's runlocal started from
it through config.init_from: the VQ-VAE's weights and EMA codebook arrive under vqvae/ and
stay bit for bit the stage-1 run's through training (no part owns them), the GPT trains,
and the final evals report the NLL with its baselines and write the sample figure."""

import os

import jax
import numpy as np
import pytest

from ssl_gen.train import checkpoint, trainer
from tests.train.conftest import load_config


def _config(path, arg, data_dir):
    c = load_config(path, arg)
    c.dataset.data_dir = data_dir
    c.progress_bar = False
    return c


@pytest.fixture(scope="module")
def s1_dir(data_dir, tmp_path_factory):
    """A 3-step stage-1 VQ-VAE run (runlocal), shared by both priors' tests."""
    s1 = _config("experiments/vqvae.py", "runlocal", data_dir)
    s1.num_train_steps, s1.checkpoint_every_steps = 3, 3
    s1.evals = {}
    out = str(tmp_path_factory.mktemp("vqvae"))
    trainer.train_and_evaluate(s1, out)
    return out


@pytest.mark.slow
def test_stage1_then_prior_through_init_from(data_dir, s1_dir, tmp_path):
    c = _config("experiments/vq_prior.py", f"runlocal,stage1={s1_dir}", data_dir)
    c.num_train_steps, c.checkpoint_every_steps = 4, 4
    c.evals.prior.every_steps = 0  # the final eval only
    out_dir = str(tmp_path / "prior")
    final = trainer.train_and_evaluate(c, out_dir)
    assert final["step"] == 4 and final["num_traces"] == 1
    for name in ("nll_nats_per_image", "bits_per_code", "nll_nats_per_image_unigram",
                 "nll_nats_per_image_position_unigram", "mmd2", "mmd2_train_floor"):
        assert np.isfinite(final[name]), name
    assert final["bits_per_code_uniform"] == 4.0  # K = 16 codes in the tiny VQ-VAE
    assert os.path.isfile(os.path.join(out_dir, "plots", "prior_samples_latest.png"))

    src = checkpoint.read_state(os.path.join(s1_dir, "checkpoints", "3"),
                                ("params", "collections"))
    got = checkpoint.read_state(os.path.join(out_dir, "checkpoints", "4"),
                                ("params", "collections"))
    same = lambda a, b: jax.tree.map(np.testing.assert_array_equal, a, b)
    same(got["params"]["params"]["vqvae"], src["params"]["params"])  # frozen, loaded
    same(got["collections"]["vq_stats"]["vqvae"], src["collections"]["vq_stats"])
    b = trainer.build(c, "")
    fresh = jax.jit(b.init_fn)(b.init_key)["params"]["params"]["gpt"]
    moved = jax.tree.map(lambda a, f: float(np.abs(np.asarray(a) - np.asarray(f)).max()),
                         got["params"]["params"]["gpt"], fresh)
    assert max(jax.tree.leaves(moved)) > 0  # the GPT trained


@pytest.mark.slow
def test_stage1_then_maskgit_prior_through_init_from(data_dir, s1_dir, tmp_path):
    """The maskgit variant end to end: masked-code training from the loaded stage 1 (frozen),
    the masked-code NLLs with their baseline, the MMD² of parallel-decoded samples and the
    figure in the final evals; the step traces once."""
    c = _config("experiments/vq_prior.py", f"maskgit,runlocal,stage1={s1_dir}", data_dir)
    c.num_train_steps, c.checkpoint_every_steps = 4, 4
    c.evals.masked_prior.every_steps = 0  # the final eval only
    out_dir = str(tmp_path / "maskgit")
    final = trainer.train_and_evaluate(c, out_dir)
    assert final["step"] == 4 and final["num_traces"] == 1
    for r in (25, 50, 75, 100):
        assert np.isfinite(final[f"masked_nll_r{r}"]), r
        assert np.isfinite(final[f"masked_nll_r{r}_position_unigram"]), r
    assert final["masked_nll_uniform"] == np.log(16)  # K = 16 in the tiny VQ-VAE
    assert np.isfinite(final["mmd2"]) and "nll_nats_per_image" not in final
    assert os.path.isfile(os.path.join(out_dir, "plots", "prior_samples_latest.png"))
    src = checkpoint.read_state(os.path.join(s1_dir, "checkpoints", "3"), ("params",))
    got = checkpoint.read_state(os.path.join(out_dir, "checkpoints", "4"), ("params",))
    jax.tree.map(np.testing.assert_array_equal, got["params"]["params"]["vqvae"],
                 src["params"]["params"])  # frozen, loaded
