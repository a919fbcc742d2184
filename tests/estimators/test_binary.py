"""ARM and DisARM: unbiased means, closed-form variances on the toy, DisARM <= ARM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from ssl_gen import estimators as est
from tests.estimators import problems as P
from tests.estimators.tolerance import (
    N_SE,
    assert_mean_close,
    assert_variance_close,
    variance_and_se,
)


def test_closed_forms_match_quadrature():
    """The toy's ARM/DisARM variances (problems.py) against numerical integration over u."""
    p = 1 / (1 + np.exp(-P.TOY_THETA))
    q = 1 / (1 + np.exp(-abs(P.TOY_THETA)))
    f = lambda b: (b - P.TOY_T) ** 2

    def pair(u):
        return float(u < p), float(1 - u < p)

    def arm(u):
        b, b_anti = pair(u)
        return (f(b_anti) - f(b)) * (u - 0.5)

    def disarm(u):
        b, b_anti = pair(u)
        return 0.5 * (f(b) - f(b_anti)) * (1 - 2 * b_anti) * (b != b_anti) * q

    for name, g in [("arm", arm), ("disarm", disarm)]:
        quad = lambda h: integrate.quad(h, 0, 1, points=[p, 1 - p], limit=200)[0]
        np.testing.assert_allclose(quad(g), P.toy_grad(), rtol=1e-8)
        var = quad(lambda u, g=g: g(u) ** 2) - quad(g) ** 2
        np.testing.assert_allclose(var, P.toy_antithetic_var(name, 1), rtol=1e-8)
    assert P.toy_antithetic_var("disarm", 1) < P.toy_antithetic_var("arm", 1)


def test_toy_mean_and_variance_match_closed_form():
    specs = {f"{n}/K={k}": (getattr(est, n)(), k, None) for n in ("arm", "disarm") for k in (1, 3)}
    theta = jnp.array(P.TOY_THETA)
    out = P.many_replicas(specs, P.toy_f, P.toy_dist, theta, 100_000, seed=10)
    for name in ("arm", "disarm"):
        for k in (1, 3):
            grads = out[f"{name}/K={k}"]
            assert_mean_close(grads, P.toy_grad(), what=f"{name}/K={k}")
            assert_variance_close(grads, P.toy_antithetic_var(name, k), what=f"{name}/K={k}")


def test_unbiased_and_disarm_beats_arm_on_three_units():
    """Non-separable f on 3 units: both means exact; DisARM's variance below ARM's in every
    coordinate, by more than the noise in the two variance estimates."""
    truth = P.brute_grad(P.bern_f, P.bern_dist, P.BERN_LOGITS)
    specs = {n: (getattr(est, n)(), 2, None) for n in ("arm", "disarm")}
    out = P.many_replicas(specs, P.bern_f, P.bern_dist, P.BERN_LOGITS, 50_000, seed=11)
    for name, grads in out.items():
        assert_mean_close(grads, truth, what=name)
    (var_arm, se_arm), (var_dis, se_dis) = (
        variance_and_se(out["arm"]),
        variance_and_se(out["disarm"]),
    )
    assert np.all(var_arm - var_dis > N_SE * (se_arm + se_dis)), (var_arm, var_dis)


def test_value_is_the_pair_mean_and_vector_output_works():
    """f: (2, 3) bits -> (2,); the value is unbiased for each row's expectation."""
    logits = jnp.array([[0.3, -0.8, 1.2], [1.0, 0.0, -2.0]])
    truth = [P.brute_value(P.bern_f, est.Bernoulli(row)) for row in logits]
    objective = est.expectation(P.bern_f, P.bern_dist, est.disarm(), 2)
    keys = jax.random.split(P.key(12), 20_000)
    values = jax.jit(jax.vmap(objective, in_axes=(None, 0)))(logits, keys)
    assert values.shape == (20_000, 2)
    assert_mean_close(values, truth, what="disarm value")


@pytest.mark.parametrize("factory", [est.arm, est.disarm])
def test_needs_a_bernoulli(factory):
    objective = est.expectation(P.cat_f, P.cat_dist, factory())
    with pytest.raises(ValueError, match="needs a Bernoulli distribution, got Categorical"):
        jax.eval_shape(objective, P.CAT_LOGITS, jax.random.key(0))
