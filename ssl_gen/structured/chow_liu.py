r"""Chow-Liu trees: the maximum-likelihood tree-structured model of data (jax/numpy only).

Chow & Liu (1968), "Approximating discrete probability distributions with dependence
trees", IEEE Trans. Inf. Theory 14(3): for a distribution that factorizes over a spanning
tree T, p_T(x) = \prod_i p(x_i) \prod_{(i,j) in T} p(x_i, x_j) / (p(x_i) p(x_j)), the
maximum log-likelihood of N samples, with every marginal fitted to the data, is

    max log L(T) = N \sum_{(i,j) in T} I(X_i; X_j) - N \sum_i H(X_i),

with I and H the empirical mutual informations and entropies. Only the first term depends
on T, so the best tree is the maximum spanning tree of the pairwise mutual information.
The same decomposition holds for Gaussians (fit by maximum likelihood: empirical means and
covariances), where the mutual information of a bivariate Gaussian with correlation rho is

    I(X_i; X_j) = -1/2 log(1 - rho_ij^2)      (Cover & Thomas, "Elements of Information
                                               Theory", 2nd ed., Sec. 8.5, Example 8.5.1).

So `tree_score(tree, mi) = \sum_{(i,j) in T} I_ij` is the tree's log-likelihood per sample
up to a constant, and `chow_liu_tree(mi) = maximum_spanning_tree(mi)` maximizes it.

Also here: `random_tree`, a uniform random labelled tree (a uniform Pruefer sequence decoded;
Pruefer 1918, the bijection behind Cayley's n^(n-2)), `random_tree_gaussian`, N samples of
a zero-mean, unit-variance Gaussian that is Markov on a given tree (each node = rho x its
parent + sqrt(1 - rho^2) noise, so the correlation of i and j is the product of the edge
correlations on their path), and
`edge_precision_recall` of an estimated tree against a reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.structured import spanning_tree as st


def gaussian_mutual_information(samples: jax.Array, eps: float = 1e-6) -> jax.Array:
    r"""The plug-in pairwise mutual information of Gaussian data: -1/2 log(1 - rho_ij^2).

    Args:
      samples: (N, n) data, N >= 2.
      eps: rho^2 is clipped to 1 - eps (a duplicated column would give +inf).

    Returns:
      (n, n) symmetric, nonnegative, zero diagonal: I_ij in nats, rho_ij the empirical
      (Pearson) correlation.
    """
    x = jnp.asarray(samples, jnp.result_type(samples, float))
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"samples must be (N >= 2, n), got shape {x.shape}")
    corr = jnp.corrcoef(x, rowvar=False)
    rho2 = jnp.clip(jnp.square(corr), 0.0, 1.0 - eps)
    mi = -0.5 * jnp.log1p(-rho2)
    return jnp.where(jnp.eye(x.shape[1], dtype=bool), 0.0, mi)


def chow_liu_tree(mutual_information: jax.Array) -> jax.Array:
    """The Chow-Liu tree: the maximum spanning tree of the mutual information, (n, n) bool."""
    return st.maximum_spanning_tree(mutual_information)


def tree_score(tree: jax.Array, mutual_information: jax.Array) -> jax.Array:
    r"""\sum_{(i,j) in T} I_ij for a symmetric 0/1 (or relaxed, in [0, 1]) adjacency `tree`
    (..., n, n): the tree model's log-likelihood per sample up to a tree-free constant.
    Linear in the adjacency, so also defined on the spanning-tree polytope."""
    tree = jnp.asarray(tree, jnp.result_type(mutual_information, float))
    return 0.5 * jnp.sum(tree * mutual_information, axis=(-2, -1))


def random_tree(key: jax.Array, n: int) -> np.ndarray:
    """A uniform random spanning tree of K_n, (n, n) symmetric bool (numpy, concrete).

    Decodes a uniform Pruefer sequence (n - 2 labels in [0, n)): a bijection between the
    sequences and the n^(n-2) labelled trees (Pruefer 1918), so the tree is uniform, exactly
    as a Wilson sample with theta = 0 (`spanning_tree.sample`), without a compile.
    """
    if n < 2:
        return np.zeros((n, n), bool)
    seq = [int(v) for v in np.asarray(jax.random.randint(key, (n - 2,), 0, n))]
    degree = np.ones(n, int)
    for v in seq:
        degree[v] += 1
    adj = np.zeros((n, n), bool)
    for v in seq:
        leaf = int(np.flatnonzero(degree == 1)[0])  # the smallest leaf
        adj[leaf, v] = adj[v, leaf] = True
        degree[leaf] -= 1
        degree[v] -= 1
    u, w = np.flatnonzero(degree == 1)
    adj[u, w] = adj[w, u] = True
    return adj


def random_tree_gaussian(key: jax.Array, tree, num_samples: int,
                         correlation=0.6) -> jax.Array:
    r"""Samples of a zero-mean, unit-variance Gaussian Markov on `tree` (a concrete (n, n)
    boolean spanning tree): root 0, each other node x_c = r_e x_parent + sqrt(1 - r_e^2) z_c
    with z ~ N(0, 1) i.i.d. and r_e the correlation of the edge (a scalar, or an (n, n)
    symmetric array read on the tree's edges). Returns (num_samples, n)."""
    adj = np.asarray(tree, bool)
    n = adj.shape[0]
    if adj.shape != (n, n) or not np.array_equal(adj, adj.T) or adj.sum() != 2 * (n - 1):
        raise ValueError("random_tree_gaussian: tree must be a symmetric (n, n) spanning tree")
    r = np.broadcast_to(np.asarray(correlation, np.float64), (n, n))
    order, parent, seen = [0], {0: -1}, {0}
    for i in order:  # breadth-first from the root
        for j in np.flatnonzero(adj[i]):
            if j not in seen:
                seen.add(int(j))
                parent[int(j)] = i
                order.append(int(j))
    if len(order) != n:
        raise ValueError("random_tree_gaussian: tree is not connected")
    z = jax.random.normal(key, (num_samples, n))
    cols = [None] * n
    cols[0] = z[:, 0]
    for c in order[1:]:
        rho = float(r[parent[c], c])
        cols[c] = rho * cols[parent[c]] + np.sqrt(1.0 - rho**2) * z[:, c]
    return jnp.stack(cols, axis=1)


def edge_precision_recall(estimate, reference) -> tuple[float, float]:
    """(precision, recall) of the estimated edge set against the reference edge set
    (symmetric (n, n) boolean adjacencies; each undirected edge counted once)."""
    est_edges = np.triu(np.asarray(estimate, bool), 1)
    ref_edges = np.triu(np.asarray(reference, bool), 1)
    hits = float(np.sum(est_edges & ref_edges))
    precision = hits / max(int(est_edges.sum()), 1)
    recall = hits / max(int(ref_edges.sum()), 1)
    return precision, recall
