"""`est.SpanningTree`: probabilities against enumeration, the score function against the exact
gradient, the stochastic softmax trick's limit and straight-through values, and refusals.

One small graph throughout: K_5 without the edge {0, 4} (75 spanning trees), scores drawn
once from a fixed seed. Compilations are few (one per estimator program); everything else
runs eagerly on the shared compiled structured kernels.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from ssl_gen.structured import spanning_tree as st
from tests.estimators.tolerance import assert_mean_close, mean_and_se

N = 5
MASK = ~np.eye(N, dtype=bool)
MASK[0, 4] = MASK[4, 0] = False
_A = np.random.default_rng(0).normal(size=(N, N))
THETA = jnp.asarray(0.7 * (_A + _A.T) / 2, jnp.float32)
_C = np.random.default_rng(1).normal(size=(N, N))
COEF = jnp.asarray((_C + _C.T) / 2, jnp.float32)  # symmetric edge weights for f


def dist_fn(theta):
    return est.SpanningTree(theta, MASK)


def linear_f(tree):
    """<c, T> over edges (each edge counted twice in the symmetric sum, halved)."""
    return 0.5 * jnp.sum(COEF * tree)


def quadratic_f(tree):
    """A non-linear f: the score function's mean must still match exactly."""
    return jnp.square(linear_f(tree) - 0.5)


def _probs(dist):
    trees = dist.support()
    return trees, jnp.exp(jax.vmap(dist.log_prob)(trees))


def test_log_prob_sums_to_one_and_moments_match_enumeration():
    dist = dist_fn(THETA)
    trees, p = _probs(dist)
    assert trees.shape == (75, N, N) and dist.num_classes == 75  # Cayley minus {0, 4}: 125 - 50
    assert not np.any(np.asarray(trees)[:, 0, 4])
    # float32: a sum of 75 terms each with relative rounding ~1e-7, and log Z's own ~1e-6.
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(dist.entropy(), -jnp.sum(p * jnp.log(p)), rtol=1e-5)
    np.testing.assert_allclose(dist.mean(), jnp.tensordot(p, trees, 1), atol=1e-5)
    other = dist_fn(-THETA)
    log_q = jax.vmap(other.log_prob)(trees)
    np.testing.assert_allclose(dist.kl(other), jnp.sum(p * (jnp.log(p) - log_q)), rtol=1e-4)

    # A batch of two triangles: the joint support is the product, 3 x 3 trees.
    batch = est.SpanningTree(jnp.stack([THETA[:3, :3], -THETA[:3, :3]]))
    trees, p = _probs(batch)
    assert trees.shape == (9, 2, 3, 3) and batch.batch_shape == (2,)
    np.testing.assert_allclose(p.prod(-1).sum(), 1.0, atol=1e-5)


def test_score_function_loo_matches_exact_gradient():
    truth = jax.jit(jax.grad(est.expectation(quadratic_f, dist_fn, est.exact())))(THETA, None)
    objective = est.expectation(quadratic_f, dist_fn, est.score_function("loo"), num_samples=4)
    replicas = 4000
    grads = jax.jit(est.grad_samples, static_argnums=(0, 3))(
        objective, THETA, jax.random.key(3), replicas
    )  # (R, n, n)
    assert grads.shape == (replicas, N, N)
    # 4 standard errors per coordinate (tolerance.py); the check has power: the standard
    # errors are a small fraction of the gradient it compares.
    assert_mean_close(grads, truth, what="score_function[loo] vs exact")
    _, se = mean_and_se(grads)
    assert np.linalg.norm(se) < 0.1 * np.linalg.norm(truth), (se, truth)


def test_relaxation_tends_to_hard_tree():
    dist = dist_fn(THETA)
    key = jax.random.key(5)
    perturbed = dist.perturb(key)
    hard = dist.hard(perturbed)
    # Same noise as perturb_and_map: the same tree.
    np.testing.assert_array_equal(hard, st.perturb_and_map(key, THETA, MASK))
    # Bound: ||X_tau - T*||_1 (both triangles) = 4 E|T* \ T| <= 4 (n - 1) P(T != T*), and
    # P(T != T*) <= (N - 1) exp(-gap / tau) under the Gibbs distribution of U / tau.
    trees = dist.support()
    scores = np.sort(np.asarray(0.5 * jnp.sum(trees * jnp.where(MASK, perturbed, 0.0), (1, 2))))
    gap = scores[-1] - scores[-2]
    assert gap > 0.1, gap  # this seed has no near-tie (a tie would need tau << gap)
    distances = []
    # tau >= 0.05: U / tau stays within float32's ~85-nat range (structured/gibbs.py).
    for tau in (1.0, 0.3, 0.1, 0.05):
        soft = dist.soft(perturbed, tau)
        np.testing.assert_allclose(jnp.sum(jnp.triu(soft)), N - 1, rtol=1e-5)  # in the polytope
        distance = float(jnp.sum(jnp.abs(soft - hard)))
        bound = 4 * (N - 1) * (len(trees) - 1) * np.exp(-gap / tau)
        assert distance <= bound + 1e-4, (tau, distance, bound)
        distances.append(distance)
    assert all(a > b for a, b in itertools.pairwise(distances)), distances
    assert distances[-1] < 1e-2, distances


def test_straight_through_value_is_hard_tree_and_gradient_is_relaxation():
    key, tau, k = jax.random.key(7), 0.5, 3

    def run(theta, key):
        st_obj = est.expectation(linear_f, dist_fn, est.straight_through_gumbel(tau), k)
        gs_obj = est.expectation(linear_f, dist_fn, est.gumbel_softmax(tau), k)
        return jax.value_and_grad(st_obj)(theta, key), jax.grad(gs_obj)(theta, key)

    (value, st_grad), gs_grad = jax.jit(run)(THETA, key)
    dist = dist_fn(THETA)
    hard = dist.hard(dist.perturb(key, (k,)))  # (K, n, n) max spanning trees of theta + G
    np.testing.assert_allclose(value, jnp.mean(jax.vmap(linear_f)(hard)), rtol=1e-6)
    # Backward = the relaxation's gradient; for linear f it equals Gumbel-Softmax's exactly.
    np.testing.assert_allclose(st_grad, gs_grad, atol=1e-6)
    assert float(jnp.linalg.norm(st_grad)) > 1e-3  # a real gradient, not zeros


def test_refusals_are_clear():
    key = jax.random.key(0)

    def trace(estimator):
        objective = est.expectation(quadratic_f, dist_fn, estimator, num_samples=2)
        jax.eval_shape(jax.grad(objective), THETA, key)  # traces, compiles nothing

    with pytest.raises(ValueError, match="reparameterizable distribution; SpanningTree has none"):
        trace(est.pathwise())
    with pytest.raises(ValueError, match="reinmax needs a Bernoulli or Categorical"):
        trace(est.reinmax())
    with pytest.raises(ValueError, match="mask must be concrete"):
        jax.jit(lambda m: est.SpanningTree(THETA, m).theta)(MASK)
    with pytest.raises(ValueError, match="spanning tree has no closed-form sampler"):
        dist_fn(THETA).conditional_perturb(key, THETA)
