"""measure_valued: a non-separable f with vector output against its closed-form gradient,
the laws of its variates, and the requirement check (z^2's mean and variance:
test_gaussian_quadratic.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ssl_gen import estimators as est
from ssl_gen.estimators.measure_valued import _variates
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


def test_variates_have_the_coupled_laws():
    """eps ~ N(0, 1), W ~ Rayleigh, M ~ double-sided Maxwell and U = (M U) / M ~ U(0, 1),
    from 4 random numbers a coordinate: Kolmogorov-Smirnov against each law (seeded; a
    wrong law fails at p ~ 0 with 200k draws, 1e-4 leaves room for the seed), M's sign fair,
    and the pairs that must be independent uncorrelated in rank (|rho| < 5 / sqrt(n))."""
    n = 200_000
    eps, w, m, mu = (np.asarray(x, np.float64) for x in
                     _variates(jax.random.key(3), (n,), jnp.float32))
    u = mu / m
    for x, law in ((eps, "norm"), (w, "rayleigh"), (np.abs(m), "maxwell"), (u, "uniform")):
        assert stats.kstest(x, law).pvalue > 1e-4, law
    assert abs(np.mean(m > 0) - 0.5) < 5 * 0.5 / np.sqrt(n)
    for a, b in ((np.abs(m), u), (m, u), (w, np.abs(m)), (eps, w), (eps, np.abs(m))):
        assert abs(stats.spearmanr(a, b).statistic) < 5 / np.sqrt(n)
