"""Variance tooling: `compare`'s rows against a direct numpy computation from the same
replicas, evaluation counts against the known costs, and the errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from ssl_gen.estimators import variance
from tests.estimators import problems as P

LOGITS = jnp.array([0.3, -0.8])
W = jnp.array([1.0, -2.0])


def _f(b):
    return jnp.square(b @ W - 0.3)


def test_compare_matches_numpy_and_counts_evaluations():
    # Both spec forms (K from num_samples, and an own K); two estimators keep compiles few.
    estimators = {"disarm": est.disarm(), "loo": (est.score_function("loo"), 3)}
    key, num_replicas = P.key(30), 64
    rows = variance.compare(estimators, _f, P.bern_dist, LOGITS, key, num_samples=2,
                            num_replicas=num_replicas, truth="exact", time_repeats=2)
    truth = np.asarray(P.brute_grad(_f, P.bern_dist, LOGITS), np.float64)
    cost = {"disarm": 4, "loo": 3}  # 2K (antithetic pairs), K
    assert [r.name for r in rows] == list(estimators)
    for row in rows:
        estimator, k = (estimators[row.name], 2) if row.name != "loo" else estimators["loo"]
        objective = est.expectation(_f, P.bern_dist, estimator, k)
        g = np.asarray(jax.jit(lambda p, kk, o=objective: est.grad_samples(
            o, p, kk, num_replicas))(LOGITS, key), np.float64)  # (R, 2), the same replicas
        mean, var = g.mean(0), g.var(0, ddof=1)
        cosines = [gi @ truth / (np.linalg.norm(gi) * np.linalg.norm(truth))
                   if np.linalg.norm(gi) > 0 else 0.0 for gi in g]
        expected = dict(mean=mean, variance_per_coordinate=var, variance=var.sum(),
                        bias=np.linalg.norm(mean - truth), bias_floor=np.sqrt(var.sum() / 64),
                        snr=np.mean(np.abs(mean) / np.sqrt(var)), cosine=np.mean(cosines))
        for field, value in expected.items():
            np.testing.assert_allclose(getattr(row, field), value, rtol=1e-5, atol=1e-9,
                                       err_msg=f"{row.name}.{field}")
        assert row.num_samples == k and row.unbiased and row.evals == cost[row.name]
        assert 0 < row.time_s < 1.0


def test_gradient_stats_of_pytrees_and_errors():
    samples = {"a": jnp.array([[1.0], [3.0]]), "b": jnp.array([[0.0, 2.0], [0.0, 2.0]])}
    stats = variance.gradient_stats(samples, {"a": jnp.array([2.0]), "b": jnp.array([0.0, 1.0])})
    np.testing.assert_allclose(stats["mean"], [2.0, 0.0, 2.0])
    np.testing.assert_allclose(stats["variance_per_coordinate"], [2.0, 0.0, 0.0])
    assert stats["bias"] == 1.0 and stats["snr"] == 2.0 / math.sqrt(2.0)
    assert math.isnan(variance.gradient_stats(samples)["cosine"])
    # A coordinate deterministic up to float32 rounding (spread 1e-9 of the largest) is left
    # out of the SNR, like an exactly deterministic one: it would add |1e-3| / 1e-9 = 1e6.
    rounding = {"a": samples["a"], "b": samples["b"] + jnp.array([[1e-3, 0.0], [1e-3 + 2e-9, 0.0]])}
    assert variance.gradient_stats(rounding)["snr"] == pytest.approx(2.0 / math.sqrt(2.0))
    with pytest.raises(ValueError, match="needs >= 2 replicas"):
        variance.gradient_stats(jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="truth has 2 coordinates, the estimates 3"):
        variance.gradient_stats(jnp.ones((4, 3)), jnp.ones(2))
    with pytest.raises(ValueError, match="truth must be a pytree, 'exact' or None"):
        variance.compare({}, _f, P.bern_dist, LOGITS, P.key(0), truth="closed_form")


def test_with_and_without_gives_one_row_per_applicable_pair():
    """Each estimator, then each control variate that applies to it: the delta method is
    left out on a Bernoulli, an estimated coefficient on a stateful estimator; on E[z^2] the
    order-2 delta method leaves the pathwise rows zero variance, and `compare` reports
    every row with its cost (K f-evaluations plus one for the Taylor expansion)."""
    cvs = {"delta2": est.control_variates.delta(2),
           "optimal": (est.control_variates.constant(), "estimated_loo")}
    discrete = variance.with_and_without(
        {"sf": est.score_function(), "relax": est.relax(hidden=2)}, cvs, _f, P.bern_dist, LOGITS,
        num_samples=2)
    assert list(discrete) == ["sf", "sf + optimal", "relax"]
    gaussian = variance.with_and_without({"pathwise": est.pathwise()}, cvs, P.gauss_f,
                                         P.gauss_dist, P.GAUSS_PARAMS)
    assert list(gaussian) == ["pathwise", "pathwise + delta2", "pathwise + optimal"]
    assert gaussian["pathwise + optimal"][1] == 2  # raised to the pair's minimum
    rows = variance.compare(gaussian, P.gauss_f, P.gauss_dist, P.GAUSS_PARAMS, P.key(31),
                            num_replicas=256, truth=P.GAUSS_GRAD, time_repeats=0)
    by_name = {r.name: r for r in rows}
    assert by_name["pathwise + delta2"].variance < 1e-8 < by_name["pathwise"].variance
    assert [r.evals for r in rows] == [1, 2, 2]
