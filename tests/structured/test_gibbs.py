"""The Gibbs distribution over spanning trees against brute-force enumeration.

Tolerances: everything runs in float32 (~1e-7 relative rounding). Log-partitions of order
1-10, probabilities and marginals (in [0, 1]) are compared to 2e-5 absolute: a few hundred
ulps, far below any modelling error the tests would catch. Most tests share the shape
(6, 6) so that each jitted function compiles once.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from ssl_gen.structured import spanning_tree as st

ATOL = 2e-5
N = 6


def random_theta(rng, n=N, scale=2.0, batch=()):
    theta = scale * rng.standard_normal(batch + (n, n))
    return ((theta + np.swapaxes(theta, -1, -2)) / 2).astype(np.float32)


def brute_force(theta, trees):
    """(log Z, p(T) for each tree, marginals, entropy) by summing over `trees`, in float64."""
    theta = theta.astype(np.float64)
    scores = 0.5 * np.sum(np.where(trees, theta, 0.0), axis=(-2, -1))  # (T,)
    log_z = logsumexp(scores)
    p = np.exp(scores - log_z)
    mu = np.einsum("t,tij->ij", p, trees)
    return log_z, p, mu, -np.sum(p * np.log(p))


def test_matrix_tree_count_is_cayley_for_complete_graphs():
    # K_k on the first k of 8 nodes, the others isolated (components with one tree each):
    # Z = k^(k-2). One batch, one compilation.
    k = np.arange(2, 9)
    inside = np.arange(8) < k[:, None]  # (7, 8)
    mask = inside[:, :, None] & inside[:, None, :] & ~np.eye(8, dtype=bool)  # (7, 8, 8)
    theta = np.zeros((7, 8, 8), np.float32)
    np.testing.assert_allclose(st.log_partition(theta, mask), (k - 2) * np.log(k), atol=ATOL)
    # theta = 0 is the uniform distribution: entropy = log #trees.
    np.testing.assert_allclose(st.entropy(np.zeros((N, N))), (N - 2) * np.log(N), atol=ATOL)
    # log 64^62 ~ 258, to float32's relative precision.
    np.testing.assert_allclose(st.log_partition(np.zeros((64, 64))), 62 * np.log(64), rtol=1e-6)


def test_log_partition_marginals_log_prob_entropy_match_enumeration():
    rng = np.random.default_rng(0)
    theta = random_theta(rng)
    trees = st.enumerate_trees(N)
    log_z, p, mu, h = brute_force(theta, trees)
    np.testing.assert_allclose(st.log_partition(theta), log_z, atol=ATOL)
    np.testing.assert_allclose(st.marginals(theta), mu, atol=ATOL)
    np.testing.assert_allclose(np.exp(st.log_prob(theta, trees)), p, atol=ATOL)
    np.testing.assert_allclose(st.entropy(theta), h, atol=ATOL)


def test_marginals_are_the_gradient_and_sum_to_n_minus_1():
    rng = np.random.default_rng(1)
    theta = random_theta(rng)
    mu = st.marginals(theta)
    np.testing.assert_allclose(np.triu(mu, 1).sum(), N - 1, rtol=1e-6)
    np.testing.assert_allclose(mu, mu.T, atol=1e-7)
    assert np.all(mu > -1e-6) and np.all(mu < 1 + 1e-6)
    # Each edge appears twice in a symmetric theta, so the gradient is mu / 2.
    grad = jax.grad(st.log_partition)(jnp.asarray(theta))
    np.testing.assert_allclose(2 * grad, mu, atol=ATOL)


def test_masked_graph_matches_enumeration_of_its_trees():
    rng = np.random.default_rng(2)
    mask = np.triu(rng.random((N, N)) < 0.6, 1)
    mask[np.arange(N - 1), np.arange(1, N)] = True  # a Hamiltonian path: connected
    mask = mask | mask.T
    theta = np.where(mask, random_theta(rng), np.nan)  # off-graph values are not read
    trees = st.enumerate_trees(N, mask)
    log_z, p, mu, h = brute_force(np.nan_to_num(theta), trees)
    np.testing.assert_allclose(st.log_partition(theta, mask), log_z, atol=ATOL)
    np.testing.assert_allclose(st.marginals(theta, mask), mu, atol=ATOL)
    np.testing.assert_allclose(np.exp(st.log_prob(theta, trees, mask)), p, atol=ATOL)
    np.testing.assert_allclose(st.entropy(theta, mask), h, atol=ATOL)
    assert np.all(st.marginals(theta, mask)[~mask] == 0)
    everything = st.enumerate_trees(N)
    outside = everything[np.any(everything & ~mask, axis=(-2, -1))][: len(trees)]
    assert np.all(st.log_prob(theta, outside, mask) == -np.inf)


def test_disconnected_graph_is_the_product_of_its_components():
    """No spanning tree exists: the functions describe maximal spanning forests."""
    rng = np.random.default_rng(3)
    theta = random_theta(rng)
    mask = np.zeros((N, N), dtype=bool)
    mask[:4, :4] = mask[4:, 4:] = True  # components {0, 1, 2, 3} and {4, 5}
    mask &= ~np.eye(N, dtype=bool)
    log_z4, _, mu4, _ = brute_force(theta[:4, :4], st.enumerate_trees(4))
    np.testing.assert_allclose(st.log_partition(theta, mask), log_z4 + theta[4, 5], atol=ATOL)
    mu = st.marginals(theta, mask)
    np.testing.assert_allclose(np.triu(mu, 1).sum(), N - 2, rtol=1e-6)
    np.testing.assert_allclose(mu[:4, :4], mu4, atol=ATOL)
    np.testing.assert_allclose(mu[4, 5], 1.0, atol=ATOL)


def test_large_and_widely_spread_scores():
    """exp(500) overflows float32; the normalised Laplacian never forms it."""
    rng = np.random.default_rng(4)
    theta = random_theta(rng)
    # Every tree has N - 1 edges: log Z(theta + s) = log Z(theta) + (N - 1) s. theta + 500 is
    # itself rounded to float32's ulp(500) = 3e-5, amplified by log det's conditioning, so
    # compare relative to |log Z| ~ 2500: rtol 1e-5.
    shifted = st.log_partition(theta + 500.0)
    np.testing.assert_allclose(shifted, st.log_partition(theta) + (N - 1) * 500.0, rtol=1e-5)
    np.testing.assert_allclose(st.marginals(theta + 500.0), st.marginals(theta), atol=1e-3)
    # Scores spread over +-100 (weights e^+-100, beyond float32's range) against float64
    # enumeration: a few dominant trees, marginals near 0 or 1.
    wide = random_theta(rng, scale=40.0)
    log_z, _, mu, _ = brute_force(wide, st.enumerate_trees(N))
    np.testing.assert_allclose(st.log_partition(wide), log_z, rtol=1e-6)
    np.testing.assert_allclose(st.marginals(wide), mu, atol=1e-4)


@pytest.mark.parametrize("gap", [30.0, 60.0])
def test_a_weak_bridge_keeps_its_digits(gap):
    """Two triangles joined by one edge of score -gap: every tree uses the bridge, so
    log Z = 2 log 3 - gap and its marginal is 1. LU on the Laplacian (e.g. slogdet) loses
    this below gap ~ 16 in float32 (the bridge's weight vanishes next to the degrees)."""
    mask = np.zeros((N, N), dtype=bool)
    mask[:3, :3] = mask[3:, 3:] = True
    mask[2, 3] = mask[3, 2] = True
    mask &= ~np.eye(N, dtype=bool)
    theta = np.zeros((N, N), np.float32)
    theta[2, 3] = theta[3, 2] = -gap
    np.testing.assert_allclose(st.log_partition(theta, mask), 2 * np.log(3) - gap, rtol=1e-6)
    mu = st.marginals(theta, mask)
    np.testing.assert_allclose(mu[2, 3], 1.0, atol=ATOL)
    np.testing.assert_allclose(mu[0, 1], 2 / 3, atol=ATOL)  # a triangle's edge: 2 of 3 trees


def test_batched_and_jitted():
    rng = np.random.default_rng(5)
    theta = random_theta(rng, batch=(2, 3))
    batched = st.log_partition(theta)
    assert batched.shape == (2, 3)
    mapped = jax.jit(jax.vmap(jax.vmap(st.log_partition)))(theta)
    np.testing.assert_allclose(mapped, batched, atol=ATOL)
    tree = st.enumerate_trees(N)[7]
    assert st.log_prob(theta, tree).shape == (2, 3)  # one tree broadcast over the batch


@pytest.mark.parametrize("fn", [st.log_partition, st.marginals, st.entropy])
def test_bad_theta_is_a_one_line_error(fn):
    theta = np.zeros((3, 3), np.float32)
    theta[0, 2] = theta[2, 0] = np.nan
    with pytest.raises(ValueError, match=rf"{fn.__name__}: theta\[\(0, 2\)\] is NaN"):
        fn(theta)
    with pytest.raises(ValueError, match="theta is not symmetric"):
        fn(np.triu(np.ones((3, 3), np.float32)))
