"""The gradient-variance tracker against a direct computation on a tiny discrete VAE."""

import functools

import jax
import numpy as np
import pytest

from ssl_gen.evals import gradient_variance as gv
from ssl_gen.models import dvae
from ssl_gen.objectives import discrete_elbo

X = np.random.default_rng(0).integers(0, 2, size=(4, 8, 8, 1)).astype(np.uint8)
MODEL = dvae.Model(latent="bernoulli", num_latents=3, hidden=(8,))  # 8 codes: exact fits
LOSS = functools.partial(discrete_elbo.loss_fn, model=MODEL)
ESTIMATORS = {
    "disarm": dict(estimator="disarm", num_samples=1),
    "rloo": dict(estimator={"name": "score_function", "baseline": "loo"}, num_samples=2),
    "exact": dict(estimator="exact"),
}
R = 16


def _direct(params, key, kwargs, num):
    """num encoder gradients of the ELBO, one jax.grad per key (the keys grad_samples uses),
    flattened in tree-leaves order, in float64: (num, D)."""
    grad = jax.jit(jax.grad(lambda p, k: -LOSS(p, {"image": X}, k, **kwargs)[0]))
    keys = jax.random.split(key, num)
    rows = [np.concatenate([np.ravel(leaf) for leaf in
                            jax.tree.leaves(grad(params, k)["params"]["encoder"])])
            for k in keys]
    return np.asarray(rows, np.float64)


def test_statistics_match_a_direct_computation():
    params = MODEL.init({"params": jax.random.key(0)}, X)
    key = jax.random.key(1)
    stats = gv.gradient_statistics(LOSS, params, {"image": X}, key, estimators=ESTIMATORS,
                                   reference=dict(estimator="exact"), num_replicas=R)
    truth = _direct(params, jax.random.fold_in(key, 0), dict(estimator="exact"), 1)[0]
    for i, (name, kwargs) in enumerate(ESTIMATORS.items(), start=1):
        g = _direct(params, jax.random.fold_in(key, i), kwargs, R)  # (R, D)
        mean, var = g.mean(0), g.var(0, ddof=1)
        s = stats[name]
        np.testing.assert_allclose(s["variance"], var.sum(), rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(s["bias"], np.linalg.norm(mean - truth), rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(s["bias_floor"], np.sqrt(var.sum() / R), rtol=1e-4,
                                   atol=1e-9)
        cos = g @ truth / (np.linalg.norm(g, axis=1) * np.linalg.norm(truth))
        np.testing.assert_allclose(s["cosine"], cos.mean(), rtol=1e-4)
        if name == "exact":  # the reference itself: no noise, no bias, perfectly aligned
            assert s["variance"] < 1e-10 and s["bias"] < 1e-5 and s["snr"] == np.inf
        else:
            noisy = var > 0
            np.testing.assert_allclose(
                s["snr"], np.mean(np.abs(mean[noisy]) / np.sqrt(var[noisy])), rtol=1e-4)
            np.testing.assert_allclose(s["log_variance"], np.log(var.mean()), rtol=1e-4)
            # Both are unbiased: the mean's distance to the truth is sampling noise
            # (5 noise floors leave a fixed-seed margin), and one estimate points roughly
            # the right way but not exactly.
            assert s["bias"] < 5 * s["bias_floor"]
            assert 0 < s["cosine"] < 1


def test_stateful_estimator_is_measured_from_its_state_and_errors():
    params = MODEL.init({"params": jax.random.key(0)}, X)
    ma = dict(estimator={"name": "score_function", "baseline": "moving_average"},
              num_samples=1)
    init = functools.partial(discrete_elbo.init_estimator_state, model=MODEL)
    stats = gv.gradient_statistics(LOSS, params, {"image": X}, jax.random.key(2),
                                   estimators={"ma": ma}, reference=dict(estimator="exact"),
                                   num_replicas=4, init_state=init)
    assert np.isfinite(stats["ma"]["variance"])
    with pytest.raises(ValueError, match=">= 2 replicas"):
        gv.summarize(np.zeros((1, 3)), np.ones(3))
