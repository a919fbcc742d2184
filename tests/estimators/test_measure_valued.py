"""measure_valued: a non-separable f with vector output against its closed-form gradient,
and the requirement check (z^2's mean and variance: test_gaussian_quadratic.py)."""

import jax
import jax.numpy as jnp
import pytest

from ssl_gen import estimators as est
from tests.estimators import problems as P
from tests.estimators.tolerance import assert_mean_close


def test_non_separable_vector_output():
    """z ~ N(mu, sigma^2) of shape (2, 3), f(z) = (z @ w)^2 + sum(sin z) per row, so
    E f = (mu @ w)^2 + (sigma^2 @ w^2) + sum(sin(mu) exp(-sigma^2 / 2)) row by row."""
    w = jnp.array([1.0, -2.0, 0.5])
    params = {
        "loc": jnp.array([[0.3, -0.2, 1.0], [0.0, 0.5, -1.0]]),
        "scale": jnp.array([[1.0, 0.5, 0.8], [0.3, 1.2, 0.6]]),
    }

    def f(z):
        return jnp.square(z @ w) + jnp.sum(jnp.sin(z), axis=-1)

    def closed_form(p):
        m, s = p["loc"], p["scale"]
        e = jnp.square(m @ w) + jnp.square(s) @ jnp.square(w)
        return jnp.sum(e + jnp.sum(jnp.sin(m) * jnp.exp(-0.5 * jnp.square(s)), axis=-1))

    grads = P.replicas(est.measure_valued(), f, P.gauss_dist, params, 1, 20_000, seed=19)
    jax.tree.map(assert_mean_close, grads, jax.grad(closed_form)(params))


def test_needs_a_normal():
    objective = est.expectation(P.bern_f, P.bern_dist, est.measure_valued())
    with pytest.raises(ValueError, match="needs a Normal distribution, got Bernoulli"):
        jax.eval_shape(objective, P.BERN_LOGITS, jax.random.key(0))
