"""The prior eval: the unigram baselines are the add-one smoothed frequencies' NLL, the test
NLL is the mean over real examples only (padding excluded), the uniform baseline is L log K,
and the sample figure is written."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.evals import EvalContext
from ssl_gen.evals import prior as prior_eval
from ssl_gen.models import vq_prior
from ssl_gen.objectives.prior import nll_per_example
from ssl_gen.train.step import split_variables


def test_baseline_nll_by_hand():
    train = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 2.0]])  # (L=2, K=3) counts
    test = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
    # Unigram over all positions: counts (3, 3, 2), N = 8: q = (4, 4, 3) / 11.
    q = np.array([4, 4, 3]) / 11
    want = -(1 * np.log(q[0]) + 1 * np.log(q[2]) + 2 * np.log(q[2]))
    np.testing.assert_allclose(prior_eval.baseline_nll(train, test, per_position=False), want)
    # Per position: q_0 = (4, 2, 1) / 7, q_1 = (1, 3, 3) / 7.
    want = -(np.log(4 / 7) + np.log(1 / 7) + 2 * np.log(3 / 7))
    np.testing.assert_allclose(prior_eval.baseline_nll(train, test, per_position=True), want)


@pytest.mark.slow  # three compilations and a matplotlib figure: ~15 s of one core
def test_evaluate_on_a_tiny_prior(tmp_path):
    model = vq_prior.Model(stage1=dict(variant="tiny", num_codes=16),
                           prior=dict(variant="tiny"))
    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 17, size=(n, 8, 8, 1)).astype(np.float32)
    train, test = images(40), images(10)
    variables = model.init({"params": jax.random.key(1)}, jnp.asarray(test[:1]))
    params, collections = split_variables(variables)
    state = {"params": params, "collections": collections}

    def eval_batches():  # two batches of 6, the last padded with garbage rows
        for i in (0, 6):
            x = np.concatenate([test[i:i + 6], images(12)])[:6]
            mask = (np.arange(6) < len(test[i:i + 6])).astype(np.float32)
            yield {"image": jnp.asarray(x), "example_mask": jnp.asarray(mask)}

    ctx = EvalContext(model=model, rng=jax.random.key(2), step=7, workdir=str(tmp_path),
                      eval_batches=eval_batches, train_source=[{"image": x} for x in train],
                      eval_source=[{"image": x} for x in test])
    out = prior_eval.evaluate(state, ctx, num_samples=8)
    logits, aux = model.apply(variables, jnp.asarray(test))
    want = float(np.mean(nll_per_example(logits, aux["codes"])))
    np.testing.assert_allclose(out["nll_nats_per_image"], want, rtol=1e-5)
    np.testing.assert_allclose(out["bits_per_code"], want / (16 * math.log(2)), rtol=1e-5)
    assert out["nll_nats_per_image_uniform"] == 16 * math.log(16)
    assert out["bits_per_code_uniform"] == 4.0
    # The unigram baseline from the training codes, computed here directly.
    tr = np.asarray(model.apply(variables, jnp.asarray(train), method=model.codes)).ravel()
    q = (np.bincount(tr, minlength=16) + 1) / (len(tr) + 16)
    te = np.asarray(aux["codes"]).ravel()
    np.testing.assert_allclose(out["nll_nats_per_image_unigram"], -np.log(q[te]).sum() / 10,
                               rtol=1e-5)
    assert out["nll_nats_per_image_position_unigram"] > 0
    assert os.path.isfile(tmp_path / "plots" / "prior_samples_step7.png")
    assert os.path.isfile(tmp_path / "plots" / "prior_samples_latest.png")
