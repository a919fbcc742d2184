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


def test_a_monte_carlo_reference_is_two_replicas_and_its_error_is_in_the_floor():
    """With RLOO as the reference: mu is the mean of its two replicas (the first two keys of
    a 2-replica draw), e = sqrt(V_ref / 2) from their spread, and floor^2 = V / R + e^2; an
    exact reference has e = 0 (checked above: floor^2 = V / R)."""
    params = MODEL.init({"params": jax.random.key(0)}, X)
    key = jax.random.key(1)
    ref = dict(estimator={"name": "score_function", "baseline": "loo"}, num_samples=4)
    stats = gv.gradient_statistics(LOSS, params, {"image": X}, key, estimators={
        "disarm": ESTIMATORS["disarm"]}, reference=ref, num_replicas=R)["disarm"]
    two = _direct(params, jax.random.fold_in(key, 0), ref, 2)  # (2, D)
    noise = np.sqrt(two.var(0, ddof=1).sum() / 2)
    assert noise > 0.05  # a 4-sample reference is visibly noisy: the check below can fail
    np.testing.assert_allclose(stats["reference_noise"], noise, rtol=1e-4)
    g = _direct(params, jax.random.fold_in(key, 1), ESTIMATORS["disarm"], R)
    np.testing.assert_allclose(stats["bias"], np.linalg.norm(g.mean(0) - two.mean(0)),
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(stats["bias_floor"],
                               np.sqrt(g.var(0, ddof=1).sum() / R + noise ** 2), rtol=1e-4)
    assert stats["bias"] < 5 * stats["bias_floor"]  # unbiased, against a noisy reference
    mean, err = gv.reference_gradient(np.ones((1, 3)))
    assert err == 0.0 and mean.tolist() == [1.0, 1.0, 1.0]  # one replica: taken as exact


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


class _Source:
    """A random-access training source of the tiny batch (the trainer's `train_source`)."""

    def __len__(self):
        return len(X)

    def __getitem__(self, i):
        return {"image": X[i], "grey": X[i] * 16}


def _state(variables):
    """A train state as the trainer passes evaluations (only its variables are read)."""
    return {"params": variables, "collections": {}}


def _ctx(step, key=3):
    from ssl_gen.evals.context import EvalContext

    return EvalContext(model=MODEL, rng=jax.random.key(key), step=step, workdir="",
                       eval_batches=lambda: iter(()), train_source=_Source(), eval_source=None)


def test_evaluate_logs_the_statistics_and_compiles_once():
    """The trainer's eval: the same numbers as `gradient_statistics` on the fixed batch, as
    `gradvar/<name>/<stat>` metrics, and a second call (another step) does not retrace."""
    params = MODEL.init({"params": jax.random.key(0)}, X)
    estimators = {k: ESTIMATORS[k] for k in ("disarm", "rloo")}
    m = gv.evaluate(_state(params), _ctx(5), estimators=estimators, num_replicas=R, batch_size=4)
    direct = gv.gradient_statistics(LOSS, params, {"image": X}, jax.random.key(3),
                                    estimators=estimators, reference=dict(estimator="exact"),
                                    num_replicas=R, step=5)
    assert gv.default_reference(MODEL)["estimator"] == "exact"  # 2^3 codes
    for name, row in direct.items():
        for stat in ("log_variance", "variance", "bias", "bias_floor", "snr", "cosine"):
            np.testing.assert_allclose(m[f"gradvar/{name}/{stat}"], row[stat], rtol=1e-5)
    traces = gv.TRACES["count"]
    params2 = jax.tree.map(lambda p: p * 1.01, params)
    m2 = gv.evaluate(_state(params2), _ctx(10, key=4), estimators=estimators, num_replicas=R,
                     batch_size=4)
    assert gv.TRACES["count"] == traces, "a later evaluation recompiled"
    assert m2["gradvar/rloo/variance"] != m["gradvar/rloo/variance"]


def test_evaluate_follows_a_temperature_schedule():
    """A scheduled estimator is measured at the step's temperature, without a retrace."""
    params = MODEL.init({"params": jax.random.key(0)}, X)
    gs = {"gs": dict(estimator={"name": "gumbel_softmax"}, num_samples=2,
                     temperature_schedule=dict(start=1.0, end=0.1, anneal_steps=10))}
    early = gv.evaluate(_state(params), _ctx(0), estimators=gs, num_replicas=R, batch_size=4)
    traces = gv.TRACES["count"]
    late = gv.evaluate(_state(params), _ctx(10), estimators=gs, num_replicas=R, batch_size=4)
    assert gv.TRACES["count"] == traces
    # Same key, same parameters: only the temperature differs, so the gradients do.
    assert early["gradvar/gs/variance"] != late["gradvar/gs/variance"]
