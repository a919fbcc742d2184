"""`exact`: enumeration against closed forms and an independent brute-force enumeration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from tests.estimators import problems as P

# float32 sums of <= 9 products: rounding is ~1e-7 relative; 1e-5 leaves room, and any
# mistake in the enumeration (a missing or doubled value) is off by >= 1e-2.
RTOL = 1e-5


def _value_and_grad(f, dist_fn, params):
    objective = est.expectation(f, dist_fn, est.exact())
    return jax.jit(jax.value_and_grad(lambda p, k: objective(p, k).sum()))(
        params, jax.random.key(0)
    )


def test_bernoulli_toy_closed_form():
    value, grad = _value_and_grad(P.toy_f, P.toy_dist, jnp.array(P.TOY_THETA))
    m = P.toy_moments()
    np.testing.assert_allclose(value, m["ef"], rtol=RTOL)
    np.testing.assert_allclose(grad, P.toy_grad(), rtol=RTOL)


@pytest.mark.parametrize(
    "f, dist_fn, params",
    [(P.bern_f, P.bern_dist, P.BERN_LOGITS), (P.cat_f, P.cat_dist, P.CAT_LOGITS)],
    ids=["bernoulli", "categorical"],
)
def test_matches_brute_force(f, dist_fn, params):
    value, grad = _value_and_grad(f, dist_fn, params)
    np.testing.assert_allclose(value, P.brute_value(f, dist_fn(params)), rtol=RTOL)
    np.testing.assert_allclose(grad, P.brute_grad(f, dist_fn, params), rtol=RTOL, atol=1e-6)


def test_f_parameters_and_hessian_are_exact():
    params = {"logits": P.BERN_LOGITS, "phi": jnp.array(0.6)}
    f_of = lambda p: lambda b: jnp.square(b @ P.BERN_W - p["phi"])

    def ours(p):
        return est.expectation(f_of(p), P.bern_dist, est.exact())(p["logits"], None)

    def brute(p):
        return P.brute_expectation(f_of(p), est.Bernoulli(p["logits"]))

    hess_ours, hess_brute = jax.jit(jax.hessian(ours))(params), jax.jit(jax.hessian(brute))(params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6), hess_ours, hess_brute
    )
    grad_phi = jax.jit(jax.grad(ours))(params)["phi"]
    p = jax.nn.sigmoid(P.BERN_LOGITS)
    np.testing.assert_allclose(grad_phi, 2 * (0.6 - p @ P.BERN_W), rtol=RTOL)  # E[2(phi - b.w)]


def test_vector_output_is_per_row():
    """f maps (2, 3) bits to (2,): each output is the expectation over its own row."""
    logits = jnp.array([[0.3, -0.8, 1.2], [1.0, 0.0, -2.0]])
    value = jax.jit(est.expectation(P.bern_f, P.bern_dist, est.exact()))(logits, None)
    assert value.shape == (2,)
    rows = [P.brute_value(P.bern_f, est.Bernoulli(row)) for row in logits]
    np.testing.assert_allclose(value, rows, rtol=RTOL)


def test_errors():
    with pytest.raises(ValueError, match="discrete distribution"):
        est.expectation(P.gauss_f, P.gauss_dist, est.exact())(P.GAUSS_PARAMS, None)
    with pytest.raises(ValueError, match="more than max_configs=16"):
        objective = est.expectation(jnp.sum, P.bern_dist, est.exact(max_configs=16))
        objective(jnp.zeros(5), None)
    with pytest.raises(ValueError, match="max_configs must be a positive int"):
        est.exact(max_configs=0)
