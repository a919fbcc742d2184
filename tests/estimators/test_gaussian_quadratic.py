"""E[z^2], z ~ N(mu, sigma^2): pathwise, score function (plain and with the Taylor control
variate) and measure-valued estimates against the closed-form gradient (2 mu, 2 sigma) and
their derived variances (problems.py), in one compiled program (the suite's time is compile
time)."""

import math

import numpy as np
from scipy import stats

from ssl_gen import estimators as est
from tests.estimators import problems as P
from tests.estimators.tolerance import assert_mean_close, assert_variance_close

CASES = {  # name -> (estimator, K, closed-form variance)
    "pathwise/K=1": (est.pathwise(), 1, P.gauss_pathwise_var(1)),
    "pathwise/K=3": (est.pathwise(), 3, P.gauss_pathwise_var(3)),
    "score_function/K=2": (est.score_function(), 2, P.gauss_score_var(2)),
    "measure_valued/K=1": (est.measure_valued(), 1, P.gauss_measure_valued_var(1)),
    "measure_valued/K=2": (est.measure_valued(), 2, P.gauss_measure_valued_var(2)),
    "delta1/K=2": (est.score_function("delta", order=1), 2, P.gauss_delta1_var(2)),
}


def test_closed_forms_match_quadrature_and_known_moments():
    x, w = np.polynomial.hermite_e.hermegauss(60)  # exact for these polynomial moments
    w = w / w.sum()
    z = P.MU + P.SIGMA * x
    g_delta1 = {"loc": P.SIGMA * x**3 + 2 * P.MU, "scale": P.SIGMA * x**2 * (x**2 - 1)}
    single = {
        "delta1": (g_delta1, P.gauss_delta1_var(1)),
        "pathwise": ({"loc": 2 * z, "scale": 2 * z * x}, P.gauss_pathwise_var(1)),
        "score": (
            {"loc": z**2 * x / P.SIGMA, "scale": z**2 * (x**2 - 1) / P.SIGMA},
            P.gauss_score_var(1),
        ),
    }
    for name, (g, var) in single.items():
        for k in ("loc", "scale"):
            np.testing.assert_allclose(np.sum(w * g[k]), P.GAUSS_GRAD[k], rtol=1e-10)
            got = np.sum(w * g[k] ** 2) - np.sum(w * g[k]) ** 2
            np.testing.assert_allclose(got, var[k], rtol=1e-10, err_msg=f"{name}/{k}")
    # The measure-valued formula uses the Rayleigh variance and Maxwell moments.
    np.testing.assert_allclose(stats.rayleigh.var(), (4 - math.pi) / 2, rtol=1e-12)
    np.testing.assert_allclose(stats.maxwell.moment(2), 3, rtol=1e-12)
    np.testing.assert_allclose(stats.maxwell.moment(4), 15, rtol=1e-12)


def test_means_and_variances_match_closed_forms():
    # 200k replicas: the score-function estimate is a degree-4 polynomial of a Gaussian
    # (kurtosis ~ 10^2), whose variance has its own se ~ 2% at this size; 4 se are allowed.
    specs = {name: (estimator, k, None) for name, (estimator, k, _) in CASES.items()}
    specs["delta2/K=1"] = (est.score_function("delta"), 1, None)
    out = P.many_replicas(specs, P.gauss_f, P.gauss_dist, P.GAUSS_PARAMS, 200_000, seed=2)
    for k in ("loc", "scale"):  # second order: h = f exactly, every replica is the gradient
        # up to float32 rounding of f - h times the score (~2e-5 relative at |eps| ~ 5).
        np.testing.assert_allclose(out["delta2/K=1"][k], P.GAUSS_GRAD[k], rtol=1e-4)
    for name, (_, _, var) in CASES.items():
        for k in ("loc", "scale"):
            assert_mean_close(out[name][k], P.GAUSS_GRAD[k], what=f"{name}/{k}")
            assert_variance_close(out[name][k], var[k], what=f"{name}/{k}")
    # Pathwise beats the score function here by 5-10x (closed forms, K = 1).
    score = P.gauss_score_var(1)
    assert all(P.gauss_pathwise_var(1)[n] * 4 < score[n] for n in ("loc", "scale"))
