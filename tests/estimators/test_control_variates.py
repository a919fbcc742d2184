"""Control variates on every Gaussian estimator: unbiased means for every (estimator, control
variate) pair on six test functions, the delta method's zero variance on quadratic f, the
estimated coefficient's noise floor and its same-sample bias, the uncoupled measure-valued
derivative, the moving-average state's update formula, and the one-line errors.

Tolerances: means within 4 standard errors (tolerance.py); variances within 4 standard
errors of their closed forms; the noise floor is stated at its test."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from ssl_gen.estimators import control_variates as cv
from tests.estimators import problems as P
from tests.estimators.tolerance import assert_mean_close, assert_variance_close, variance_and_se

CV = est.with_control_variate
GAUSSIAN = {  # every estimator that takes a Normal
    "pathwise": est.pathwise(),
    "score_function": est.score_function(),
    "measure_valued": est.measure_valued(),
    "measure_valued[uncoupled]": est.measure_valued(coupled=False),
}
# A moving-average state whose debiased baseline is 0.5 (one update of 0.5 with decay 0.9).
MA_STATE = est.MovingAverageState(jnp.array(0.05), jnp.array(1, jnp.int32))
CONTROL_VARIATES = {  # name -> (control variate, coefficient, state)
    "none": None,
    "constant": (cv.constant(), 1.0, None),
    "moving_average": (cv.moving_average(0.9), 1.0, MA_STATE),
    "loo": (cv.leave_one_out(), 1.0, None),
    "optimal": (cv.constant(), "estimated_loo", None),
    "delta1": (cv.delta(1), 1.0, None),
    "delta2": (cv.delta(2), 1.0, None),
    "delta1,estimated_loo": (cv.delta(1), "estimated_loo", None),
    "delta2,estimated_loo": (cv.delta(2), "estimated_loo", None),
}


@functools.cache
def _every_pair(num_samples=4, num_replicas=10_000):
    """Replicas of every (estimator, control variate) pair on the Gaussian rows, in one
    program (compiling is this file's cost)."""
    specs = {}
    for e_name, estimator in GAUSSIAN.items():
        for c_name, spec in CONTROL_VARIATES.items():
            if spec is None:
                specs[(e_name, c_name)] = (estimator, num_samples, None)
            else:
                control, coefficient, state = spec
                specs[(e_name, c_name)] = (CV(estimator, control, coefficient), num_samples, state)
    out = P.many_replicas({f"{e}|{c}": s for (e, c), s in specs.items()}, P.rows_f,
                          P.gauss_dist, P.ROWS_PARAMS, num_replicas, seed=21)
    return {tuple(name.split("|")): grads for name, grads in out.items()}


@pytest.mark.slow  # one program of 36 estimators: ~1 min to compile on a loaded 2-core box
def test_every_pair_is_unbiased_on_every_test_function():
    """Rows: linear, quadratic, cubic, quartic, weighted, cos (problems.rows_f); each
    coordinate's mean within 4 standard errors of the closed-form gradient."""
    truth = P.rows_grad()
    for (e_name, c_name), grads in _every_pair().items():
        for field in ("loc", "scale"):
            for r, row in enumerate(P.ROW_NAMES):
                assert_mean_close(grads[field][:, r], truth[field][r],
                                  what=f"{e_name}+{c_name} {row} d/d{field}")


@pytest.mark.slow  # shares the program above
def test_delta2_has_zero_variance_for_quadratic_f():
    """f - h = 0 for f of degree <= 2, so with the order-2 delta method every replica of
    every estimator (pathwise and score function as well as measure-valued) is the exact
    gradient, up to float32 rounding of f - h (relative 1e-4); the first-order one is not."""
    truth = jax.tree.map(np.asarray, P.rows_grad())
    rows = list(P.QUADRATIC_ROWS)
    for e_name in GAUSSIAN:
        grads = jax.tree.map(np.asarray, _every_pair()[(e_name, "delta2")])
        for field in ("loc", "scale"):
            got = grads[field][:, rows]  # (R, 3, 2)
            np.testing.assert_allclose(got, np.broadcast_to(truth[field][rows], got.shape),
                                       rtol=1e-4, atol=1e-5, err_msg=f"{e_name} {field}")
        first = np.asarray(_every_pair()[(e_name, "delta1")]["scale"][:, 1])  # quadratic row
        assert np.all(np.var(first, 0) > 1e-3), e_name


def _variances(specs, num_replicas, seed):
    out = P.many_replicas(specs, P.rows_f, P.gauss_dist, P.ROWS_PARAMS, num_replicas, seed)
    return {n: {k: variance_and_se(g[k]) for k in g} for n, g in out.items()}


@pytest.mark.slow  # 3 estimators x 3 control variates x 3 coefficients, one program
def test_estimated_coefficient_stays_within_its_noise_floor():
    """Var(estimated beta) <= FLOOR * min(Var(no control variate), Var(beta = 1)) per
    coordinate, where neither is zero (an exact control variate leaves only rounding).

    The floor: estimating beta from the K samples costs (K - 2) / (K - 3) of the variance
    at the best beta for Gaussian estimates (Lavenberg & Welch 1981), 1.08 at K = 16; the
    score function's heavy-tailed estimates (kurtosis ~10^2) raise it, to at most 1.22
    measured on these rows at K = 16 (1.41 at K = 8, 1.12 at K = 32; another seed), so
    FLOOR = 1.3, plus 4 standard errors of the compared variances. A wrong coefficient
    fails it (below)."""
    k, floor = 16, 1.3
    specs = {}
    for e_name in ("pathwise", "score_function", "measure_valued"):
        specs[e_name] = (GAUSSIAN[e_name], k, None)
        pairs = (("delta1", cv.delta(1)), ("delta2", cv.delta(2)))
        if e_name == "score_function":  # a baseline is inert for the other two (c = 0)
            pairs += (("constant", cv.constant()),)
        for c_name, control in pairs:
            for coefficient in (1.0, "estimated") + ((-1.0,) if c_name == "delta1" else ()):
                specs[f"{e_name}|{c_name}|{coefficient}"] = (
                    CV(GAUSSIAN[e_name], control, coefficient), k, None)
    var = _variances(specs, 10_000, seed=22)
    wrong_exceeds = False
    for name in specs:
        if name.count("|") != 2 or not name.endswith("|estimated"):
            continue
        e_name, c_name, _ = name.split("|")
        for field in ("loc", "scale"):
            (plain, se_p), (fixed, se_f) = var[e_name][field], var[f"{e_name}|{c_name}|1.0"][field]
            got, se = var[name][field]
            best = np.minimum(plain, fixed)
            se_best = np.where(plain < fixed, se_p, se_f)
            live = best > 1e-6 * plain  # an exact control variate leaves float32 rounding only
            bound = floor * best + 4 * (se + floor * se_best)
            assert np.all((got <= bound)[live]), (name, field, got / best)
            if c_name == "delta1":
                wrong = var[f"{e_name}|{c_name}|-1.0"][field][0]
                wrong_exceeds |= bool(np.any((wrong > bound)[live]))
    assert wrong_exceeds  # the check has power: beta = -1 doubles the error it should remove


def test_same_sample_coefficient_is_biased_as_predicted():
    """Pathwise + delta1 on E[z^2] with beta estimated from the same K samples: g_sigma =
    2 mu eps + 2 sigma eps^2, c_sigma = 2 mu eps, and the regression estimate is
    2 sigma (m2 - eps bar * slope of eps^2 on eps) with slope = 2 eps bar + (a term
    independent of eps bar), so its mean is 2 sigma (1 - 2 / K): 50% low at K = 4, which is
    why `estimated` is flagged biased and `estimated_loo` (also checked) is not."""
    k = 4
    specs = {"same": (CV(est.pathwise(), cv.delta(1), "estimated"), k, None),
             "loo": (CV(est.pathwise(), cv.delta(1), "estimated_loo"), k, None)}
    out = P.many_replicas(specs, P.gauss_f, P.gauss_dist, P.GAUSS_PARAMS, 20_000, seed=23)
    assert not specs["same"][0].unbiased and specs["loo"][0].unbiased
    assert_mean_close(out["same"]["scale"], 2 * P.SIGMA * (1 - 2 / k), what="same-sample")
    assert_mean_close(out["same"]["loc"], P.GAUSS_GRAD["loc"], what="c_mu = 0: no bias")
    jax.tree.map(assert_mean_close, out["loo"], P.GAUSS_GRAD)


def test_uncoupled_measure_valued_is_unbiased_and_noisier():
    """E[z^2]: both couplings' means are (2 mu, 2 sigma), their variances the closed forms
    (problems.py), and the uncoupled variance exceeds the coupled one in both coordinates
    (closed forms and measured, by more than 4 standard errors)."""
    specs = {"coupled": (est.measure_valued(), 2, None),
             "uncoupled": (est.measure_valued(coupled=False), 2, None)}
    out = P.many_replicas(specs, P.gauss_f, P.gauss_dist, P.GAUSS_PARAMS, 100_000, seed=24)
    closed = {"coupled": P.gauss_measure_valued_var(2),
              "uncoupled": P.gauss_measure_valued_uncoupled_var(2)}
    for name, grads in out.items():
        for field in ("loc", "scale"):
            assert_mean_close(grads[field], P.GAUSS_GRAD[field], what=f"{name} {field}")
            assert_variance_close(grads[field], closed[name][field], what=f"{name} {field}")
    for field in ("loc", "scale"):
        assert closed["uncoupled"][field] > closed["coupled"][field]
        (v_u, se_u), (v_c, se_c) = (variance_and_se(out[n][field])
                                    for n in ("uncoupled", "coupled"))
        assert v_u - v_c > 4 * (se_u + se_c), field


@pytest.mark.parametrize("debias,warmup", [(True, False), (False, False), (False, True)])
def test_moving_average_state_follows_its_update_formula(debias, warmup):
    """Through the combinator (pathwise here: any estimator), calls whose f is the constant
    v_t: mean_t = d_t mean_{t-1} + (1 - d_t) v_t, count_t = t, with d_t = d or, with warmup,
    min(d, (1 + t') / (10 + t')) after t' updates; the baseline used by the next call is
    mean / (1 - d^t) debiased, mean otherwise (and 0 before any update)."""
    decay, values = 0.8, [2.0, 5.0, -1.0, 3.0]
    control = cv.moving_average(decay, debias=debias, warmup=warmup)
    estimator = CV(est.pathwise(), control)
    assert estimator.stateful and estimator.init() == cv.moving_average_init()
    state, mean = estimator.init(), 0.0
    for t, v in enumerate(values):
        f = lambda z, v=v: jnp.sum(z) * 0.0 + v
        objective = est.expectation(f, P.gauss_dist, estimator, 2)
        value, state = objective(P.GAUSS_PARAMS, jax.random.key(t), state)
        np.testing.assert_allclose(value, v, rtol=1e-6)  # h is a constant: value = mean f
        d = min(decay, (1 + t) / (10 + t)) if warmup else decay
        mean = d * mean + (1 - d) * v
        assert int(state.count) == t + 1
        np.testing.assert_allclose(state.mean, mean, rtol=1e-6)
        want = mean / (1 - decay ** (t + 1)) if debias else mean
        np.testing.assert_allclose(cv.moving_average_value(state, decay, debias), want,
                                   rtol=1e-6)
    assert float(cv.moving_average_value(cv.moving_average_init(), decay, debias)) == 0.0
    # The baseline enters the value: with f = v and b = v the score function's gradient is 0.
    sf = CV(est.score_function(), control)
    b = float(cv.moving_average_value(state, decay, debias))
    objective = est.expectation(lambda z: jnp.sum(z) * 0.0 + b, P.gauss_dist, sf, 2)
    grads = jax.grad(lambda p: objective(p, jax.random.key(9), state)[0])(P.GAUSS_PARAMS)
    jax.tree.map(lambda g: np.testing.assert_allclose(g, 0.0, atol=1e-5), grads)


def test_composition_and_errors():
    """Names, flags and states of the combinations; every misuse is a one-line ValueError."""
    both = CV(est.relax(hidden=2), cv.moving_average())
    assert both.name == "relax[2][moving_average]" and both.stateful
    assert isinstance(both.init(), cv.CombinedState)
    assert CV(est.pathwise(), cv.delta(1), 0.5).name == "pathwise[delta1*0.5]"
    assert est.score_function("optimal").min_samples == 2 and est.score_function("loo").unbiased
    errors = {
        "needs one estimate per sample": lambda: CV(est.relax(), cv.leave_one_out()),
        "coefficient must be a number": lambda: CV(est.pathwise(), cv.delta(), "optimal"),
        "warmup replaces debias": lambda: cv.moving_average(warmup=True),
        r"decay must be in \[0, 1\)": lambda: cv.moving_average(1.0),
        "order must be 1 or 2": lambda: cv.delta(3),
    }
    for message, make in errors.items():
        with pytest.raises(ValueError, match=message) as info:
            make()
        assert "\n" not in str(info.value)
    bad = est.expectation(P.bern_f, P.bern_dist, CV(est.score_function(), cv.delta()), 2)
    with pytest.raises(ValueError, match="delta control variate needs a Normal distribution"):
        jax.eval_shape(bad, P.BERN_LOGITS, jax.random.key(0))
    with pytest.raises(ValueError, match="needs num_samples >= 3"):
        est.expectation(P.gauss_f, P.gauss_dist, CV(est.pathwise(), cv.delta(), "estimated"), 2)
