"""The masked-prior eval: a fixed ratio masks exactly ceil(r N) codes per example (at least
one); at r = 1 the masked NLL is the cross entropy of the all-[MASK] input's logits over
every real code and the baseline is the add-one position-unigram's, both computed here
directly (padding excluded); the figure is written; an autoregressive prior is refused here
and a masked one by the likelihood eval."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.evals import EvalContext
from ssl_gen.evals import masked_prior as masked_eval
from ssl_gen.evals import prior as prior_eval
from ssl_gen.models import vq_prior
from ssl_gen.objectives.prior import nll_per_example
from ssl_gen.train.step import split_variables


def test_fixed_ratio_mask_counts():
    for r, want in ((0.3, 5), (0.25, 4), (1.0, 16), (1e-3, 1)):
        m = np.asarray(masked_eval.fixed_ratio_mask(jax.random.key(0), 50, 16, r))
        np.testing.assert_array_equal(m.sum(1), want)
    m = np.asarray(masked_eval.fixed_ratio_mask(jax.random.key(1), 4000, 16, 0.25))
    np.testing.assert_allclose(m.mean(0), 0.25, atol=0.03)  # uniform positions (s.e. 0.007)


def _setup(prior):
    model = vq_prior.Model(stage1=dict(variant="tiny", num_codes=16), prior=prior,
                           num_steps=4)
    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 17, size=(n, 8, 8, 1)).astype(np.float32)
    train, test = images(40), images(10)
    variables = model.init({"params": jax.random.key(1)}, jnp.asarray(test[:1]))
    params, collections = split_variables(variables)

    def eval_batches():  # two batches of 6, the last padded with garbage rows
        for i in (0, 6):
            x = np.concatenate([test[i:i + 6], images(12)])[:6]
            mask = (np.arange(6) < len(test[i:i + 6])).astype(np.float32)
            yield {"image": jnp.asarray(x), "example_mask": jnp.asarray(mask)}

    ctx = EvalContext(model=model, rng=jax.random.key(2), step=7, workdir="",
                      eval_batches=eval_batches, train_source=[{"image": x} for x in train],
                      eval_source=[{"image": x} for x in test])
    return model, variables, {"params": params, "collections": collections}, ctx, train, test


def test_each_eval_refuses_the_other_kind_of_prior():
    _, _, state, ctx, _, _ = _setup(dict(variant="tiny"))
    with pytest.raises(ValueError, match="not a bidirectional"):
        masked_eval.evaluate(state, ctx)
    _, _, state, ctx, _, _ = _setup(dict(variant="tiny", bidirectional=True))
    with pytest.raises(ValueError, match="no exact likelihood"):
        prior_eval.evaluate(state, ctx)
    with pytest.raises(ValueError, match="ratios must be"):
        masked_eval.evaluate(state, ctx, ratios=(0.5, 1.5))


@pytest.mark.slow  # a few compilations and a matplotlib figure: ~20 s of one core
def test_evaluate_on_a_tiny_masked_prior(tmp_path):
    model, variables, state, ctx, train, test = _setup(dict(variant="tiny",
                                                            bidirectional=True))
    ctx = ctx._replace(workdir=str(tmp_path))
    out = masked_eval.evaluate(state, ctx, ratios=(0.5, 1.0), num_samples=8)
    codes = np.asarray(model.apply(variables, jnp.asarray(test), method=model.codes))
    all_masked = jnp.full(codes.shape, model.mask_id)
    logits = model.apply(variables, all_masked, method=model.logits)
    want = float(np.sum(nll_per_example(logits, jnp.asarray(codes)))) / codes.size
    np.testing.assert_allclose(out["masked_nll_r100"], want, rtol=1e-5)
    np.testing.assert_allclose(out["masked_bits_r100"], want / math.log(2), rtol=1e-5)
    tr = np.asarray(model.apply(variables, jnp.asarray(train), method=model.codes))  # (40, L)
    counts = np.stack([np.bincount(tr[:, t], minlength=16) for t in range(16)])  # (L, K)
    logq = np.log((counts + 1) / (40 + 16))
    base = -logq[np.arange(16)[None], codes].mean()
    np.testing.assert_allclose(out["masked_nll_r100_position_unigram"], base, rtol=1e-5)
    assert out["masked_nll_uniform"] == math.log(16)
    assert 0 < out["masked_nll_r50"] and 0 <= out["masked_acc_r50"] <= 1
    assert os.path.isfile(tmp_path / "plots" / "prior_samples_step7.png")
