"""Gumbel-Softmax, straight-through, ST-Gumbel, ReinMax, Gumbel-Rao and gapped ST: bias
against the exact gradient, exact forward values, the linear case where straight-through is
exact, Gumbel-Rao's Rao-Blackwellization of ST-Gumbel, and the errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from tests.estimators import problems as P
from tests.estimators.tolerance import N_SE, assert_mean_close, mean_and_se, variance_and_se

TEMPERATURES = (1.0, 0.3, 0.1)
PROBLEMS = {
    "bernoulli": (P.bern_f, P.bern_dist, P.BERN_LOGITS),
    "categorical": (P.cat_f, P.cat_dist, P.CAT_LOGITS),
}


@pytest.mark.parametrize("problem", PROBLEMS)
def test_gumbel_softmax_bias_shrinks_with_temperature(problem):
    f, dist_fn, params = PROBLEMS[problem]
    truth = np.asarray(P.brute_grad(f, dist_fn, params))
    # K = 4 samples per replica: the bias is the same, the noise in its estimate halves.
    specs = {str(t): (est.gumbel_softmax(t), 4, None) for t in TEMPERATURES}
    out = P.many_replicas(specs, f, dist_fn, params, 50_000, seed=7)
    bias, se = [], []
    for t in TEMPERATURES:
        mean, mean_se = mean_and_se(out[str(t)])
        bias.append(np.linalg.norm(mean - truth))
        se.append(np.linalg.norm(mean_se))  # noise in a bias norm is at most this
    for i in range(len(TEMPERATURES) - 1):  # each step down in tau cuts the bias, beyond noise
        assert bias[i] - bias[i + 1] > N_SE * (se[i] + se[i + 1]), (TEMPERATURES, bias, se)
    # The bias is real: the unbiasedness check rejects Gumbel-Softmax at tau = 1.
    with pytest.raises(AssertionError):
        assert_mean_close(out["1.0"], truth)


def test_straight_through_is_exact_for_linear_f():
    """For f(z) = <w, z>, E f = <w, mu(logits)> and every ST gradient is exactly its gradient."""
    cat_w = jnp.array([[1.0, -1.0, 0.5], [2.0, 0.0, -1.5]])
    cases = {
        "bernoulli": (P.bern_dist, P.BERN_LOGITS, P.BERN_W),
        "categorical": (P.cat_dist, P.CAT_LOGITS, cat_w),
    }

    def run(key):
        out = {}
        for name, (dist_fn, logits, w) in cases.items():
            f = lambda z, w=w: jnp.sum(z * w)
            objective = est.expectation(f, dist_fn, est.straight_through(), 1)
            truth = jax.grad(lambda p, w=w, d=dist_fn: jnp.sum(d(p).mean() * w))(logits)
            out[name] = (est.grad_samples(objective, logits, key, 100), truth)
        return out

    for name, (grads, truth) in jax.jit(run)(P.key(9)).items():
        # Every replica is exact; 1e-6 is float32 rounding of a few products.
        np.testing.assert_allclose(
            grads, jnp.broadcast_to(truth, grads.shape), atol=1e-6, err_msg=name
        )


@pytest.mark.parametrize("problem", PROBLEMS)
def test_reinmax_unbiased_for_quadratic_f_and_straight_through_values_exact(problem):
    """Both problems' f are quadratic in each variable, where ReinMax's trapezoid rule is
    exact: at tau = 1 its mean is the exact gradient; plain ST and ReinMax at tau = 2 miss it
    by more than the tolerance (so the check would catch a first-order method). All of the
    straight-through family evaluate f at exact samples: their values are unbiased for E f."""
    f, dist_fn, params = PROBLEMS[problem]
    truth = np.asarray(P.brute_grad(f, dist_fn, params))
    value = P.brute_value(f, dist_fn(params))
    specs = {
        "reinmax[1]": (est.reinmax(1.0), 2, None),
        "reinmax[2]": (est.reinmax(2.0), 2, None),
        "st": (est.straight_through(), 2, None),
        "st_gumbel": (est.straight_through_gumbel(0.5), 2, None),
    }
    out = P.many_replicas(specs, f, dist_fn, params, 20_000, seed=17, with_values=True)
    assert_mean_close(out["reinmax[1]"][1], truth, what=f"{problem}/reinmax[1]")
    for name in ("reinmax[2]", "st"):
        with pytest.raises(AssertionError):
            assert_mean_close(out[name][1], truth, what=f"{problem}/{name}")
    for name, (values, _) in out.items():
        assert_mean_close(values, value, what=f"{problem}/{name} value")


@pytest.mark.parametrize("problem", PROBLEMS)
def test_gumbel_rao_has_st_gumbel_mean_and_lower_variance(problem):
    """E[Gumbel-Rao | D] = E[ST-Gumbel | D] (the tower property): the same mean, so the mean of
    their paired difference is 0 (its se from the pairs themselves, whatever their
    dependence); Rao-Blackwell: the variance is lower in every coordinate, beyond noise. The
    gapped ST gradient is a function of the sample alone: at most |support| distinct values."""
    f, dist_fn, params = PROBLEMS[problem]
    specs = {
        "st_gumbel": (est.straight_through_gumbel(0.5), 1, None),
        "gumbel_rao": (est.gumbel_rao(0.5, 8), 1, None),
        "gst": (est.gapped_straight_through(0.5), 1, None),
    }
    out = P.many_replicas(specs, f, dist_fn, params, 40_000, seed=18)
    diff = out["gumbel_rao"] - out["st_gumbel"]
    assert_mean_close(diff, np.zeros(diff.shape[1:]), what=f"{problem}: rao - st_gumbel")
    (var_st, se_st), (var_rao, se_rao) = map(variance_and_se, (out["st_gumbel"], out["gumbel_rao"]))
    assert np.all(var_st - var_rao > N_SE * (se_st + se_rao)), (var_st, var_rao)
    flat = np.asarray(out["gst"]).reshape(len(out["gst"]), -1).round(5)
    support = len(dist_fn(params).support())
    assert len(np.unique(flat, axis=0)) <= support, "gst gradient is not a function of D"


def test_reinmax_temperature_below_one_is_an_error():
    with pytest.raises(ValueError, match="temperature must be >= 1"):
        est.reinmax(0.5)


TEMPERED = [est.gumbel_softmax, est.straight_through_gumbel, est.reinmax, est.gumbel_rao,
            est.gapped_straight_through, est.rebar, est.relax]


@pytest.mark.parametrize("factory", TEMPERED, ids=lambda f: f.__name__)
@pytest.mark.parametrize("temperature", [0.0, -0.5, float("nan"), float("inf"), "hot"])
def test_bad_temperature_is_a_construction_error(factory, temperature):
    with pytest.raises(ValueError, match="temperature must be"):
        factory(temperature)


def test_bad_settings_are_construction_errors():
    with pytest.raises(ValueError, match="num_rao_samples must be an int >= 1"):
        est.gumbel_rao(0.5, 0)
    with pytest.raises(ValueError, match="gap must be >= 0"):
        est.gapped_straight_through(gap=-1.0)


@pytest.mark.parametrize(
    "estimator",
    [
        est.gumbel_softmax(0.5),
        est.straight_through(),
        est.straight_through_gumbel(0.5),
        est.reinmax(),
        est.gumbel_rao(),
        est.gapped_straight_through(),
    ],
    ids=lambda e: e.name,
)
def test_continuous_distribution_is_an_error(estimator):
    objective = est.expectation(P.gauss_f, P.gauss_dist, estimator)
    with pytest.raises(ValueError, match="needs a discrete distribution"):
        jax.eval_shape(objective, P.GAUSS_PARAMS, jax.random.key(0))
