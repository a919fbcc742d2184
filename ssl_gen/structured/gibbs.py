r"""The Gibbs distribution over spanning trees: partition function, marginals, entropy.

For edge scores theta on a graph G = (V, E), the Gibbs (exponential-family) distribution
over the spanning trees T of G is

    p(T) = exp(\sum_{e \in T} theta_e) / Z(theta),    Z(theta) = \sum_T \prod_{e \in T} w_e,

with weights w_e = exp(theta_e). Kirchhoff's matrix-tree theorem (1847) counts the trees:
Z = det L_r, where L = diag(W 1) - W is the weighted Laplacian and L_r is L without the row
and column of any one root node r (the grounded Laplacian). Its gradient gives the edge
marginals (Lyons & Peres, "Probability on Trees and Networks", ch. 4):

    mu_e = P(e \in T) = d log Z / d theta_e = w_e (b_e^T L_r^{-1} b_e) = w_e R_eff(i, j),

b_e = 1_i - 1_j with the root's entry dropped: an edge's marginal is its weight times the
effective resistance between its ends. They sum to |V| - 1. The entropy of an exponential
family is H = log Z - \sum_e mu_e theta_e.

Numerics. exp(theta) over- or underflows for large |theta|, and the determinant of L_r
cancels catastrophically once the distribution is peaked: its diagonal d_i = \sum_j w_ij is
a sum that the off-diagonal entries nearly cancel, so LU (or Cholesky, or `slogdet`) on
L_r returns garbage, even -inf, as soon as a cut's weight falls below ~1e-7 of the degrees
next to it in float32 (score gaps of ~16 nats). Two changes remove both problems:

1. Scale: work with a_ij = w_ij / sqrt(d_i d_j) = exp(theta_ij - (l_i + l_j) / 2), where
   l_i = log d_i = logsumexp_j theta_ij is computed stably; a_ij lies in [0, 1].
2. Eliminate without subtraction (the idea of Grassmann, Taksar & Heyman 1985 for Markov
   chains, i.e. M-matrices).
   Eliminating a node k from a Laplacian (Gaussian elimination, a Schur complement) gives
   the Laplacian of the reduced network with weights w_ij + w_ik w_kj / D_k ("Kron
   reduction"), where D_k is k's current degree, and det L_r is the product of the pivots
   D_k. Computing each pivot as the sum of k's current edge weights, never as a diagonal
   entry minus something, leaves only additions and multiplications of positive numbers.
   In the scaled variables: a_ij += a_ik a_kj / P_k, with P_k = D_k / d_k =
   \sum_j a_kj sqrt(d_j / d_k), and log Z = \sum_{k != r} (l_k + log P_k).

So log Z is accurate to float rounding until a scaled weight a_ij underflows (score gaps
beyond ~85 nats in float32, ~700 in float64; or degree ratios beyond e^160 in float32,
e^1400 in float64): then -inf or NaN; use `jax.config.update("jax_enable_x64", True)` and
float64 scores there (float32 scores compute in float32 in either mode). The cost is n
sequential O(n^2) steps of a `lax.fori_loop` (~1 ms at n = 64 on one CPU core); marginals
are its reverse-mode gradient (same accuracy; memory O(n^3) for the stored steps).

Disconnected graphs (with `mask`). A graph with c > 1 components has no spanning tree. The
functions here then describe maximal spanning forests (one spanning tree per component,
|V| - c edges), Z = \prod_k Z_k, which is the same matrix-tree formula with one root per
component (the smallest node of each; `graph.component_labels`). This matches what
`minimum_spanning_tree` and `sample` return. For connected graphs it is the usual
distribution over spanning trees.

Conventions: theta is a symmetric (..., n, n) array (see `graph.py` for `mask` and the
eager checks; under jit the symmetric part (theta + theta^T) / 2 is used, so
`jax.grad(log_partition)(theta)` equals `marginals(theta) / 2`: each edge appears twice).
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

from ssl_gen.structured.graph import check_graph, component_labels, symmetric_graph


def log_partition(theta, mask=None) -> jax.Array:
    """log Z(theta) = log \\sum_T exp(\\sum_{e in T} theta_e), by the matrix-tree theorem.

    Args:
      theta: (..., n, n) symmetric finite edge scores; the diagonal is ignored.
      mask: optional symmetric boolean, broadcastable to theta's shape; False = no edge.

    Returns:
      (...,) log-partition over spanning trees (over maximal spanning forests if the graph
      is disconnected). For theta = 0 on K_n it is (n - 2) log n (Cayley's formula).
    """
    check_graph("log_partition", "theta", theta, mask)
    return _log_partition(theta, mask)


def marginals(theta, mask=None) -> jax.Array:
    """Edge marginals mu_ij = P(edge {i, j} in T) under the Gibbs distribution.

    mu_e = w_e R_eff(e), computed as 2 * jax.grad(log_partition)(theta) through the stable
    elimination (an explicit inverse of the Laplacian would inherit its cancellation).

    Args:
      theta: (..., n, n) symmetric finite edge scores.
      mask: optional symmetric boolean edge mask (see `log_partition`).

    Returns:
      (..., n, n) symmetric marginals in [0, 1] (up to float rounding), 0 off the graph and
      on the diagonal; each graph's marginals sum (over i < j) to n - #components.
    """
    check_graph("marginals", "theta", theta, mask)
    return _log_partition_and_marginals(theta, mask)[1]


def log_prob(theta, tree, mask=None) -> jax.Array:
    """log p(T) = \\sum_{e in T} theta_e - log Z(theta).

    Args:
      theta: (..., n, n) symmetric finite edge scores.
      tree: (..., n, n) symmetric boolean adjacency of a spanning tree of the graph (a
        maximal spanning forest if it is disconnected), e.g. from `sample`. Not checked:
        for other edge sets the value is meaningless, except that using an edge outside
        the graph (or the diagonal) gives -inf.
      mask: optional symmetric boolean edge mask (see `log_partition`).

    Returns:
      (...,) log-probabilities (broadcast over theta's and tree's batch shapes).
    """
    check_graph("log_prob", "theta", theta, mask)
    return _log_prob(theta, tree, mask)


def entropy(theta, mask=None) -> jax.Array:
    """Entropy H(p) = log Z - \\sum_e mu_e theta_e of the Gibbs distribution, in nats.

    Args:
      theta: (..., n, n) symmetric finite edge scores.
      mask: optional symmetric boolean edge mask (see `log_partition`).

    Returns:
      (...,) entropies; log(n^(n-2)) for theta = 0 on K_n (the uniform distribution).
    """
    check_graph("entropy", "theta", theta, mask)
    sym, present = symmetric_graph(theta, mask)
    log_z, mu = _log_partition_and_marginals(theta, mask)
    # Each edge appears twice in the symmetric sum.
    expected_score = 0.5 * jnp.sum(jnp.where(present, mu * sym, 0.0), axis=(-2, -1))
    return log_z - expected_score


def roots_of(present, mask) -> jax.Array:
    """One root per connected component (its smallest node): (..., n, n) -> (..., n) bool.

    With mask=None the graph is complete and node 0 is the only root (no loop needed).
    """
    n = present.shape[-1]
    if mask is None:
        return jnp.broadcast_to(jnp.arange(n) == 0, present.shape[:-1])
    return component_labels(present) == jnp.arange(n)


def _log_partition_of(sym, present, roots):
    """log Z by scaled, subtraction-free Kron reduction (see the module docstring).

    Args:
      sym: (..., n, n) symmetric scores; present: (..., n, n) edge set; roots: (..., n).

    Returns:
      (...,) log Z.
    """
    n = sym.shape[-1]
    # Isolated nodes (always roots) get a row of 0s so logsumexp and its gradient stay
    # finite; their log-degree is never used.
    has_edge = jnp.any(present, axis=-1)
    rows = jnp.where(has_edge[..., None], jnp.where(present, sym, -jnp.inf), 0.0)
    log_degree = jax.nn.logsumexp(rows, axis=-1)  # (..., n)
    half = 0.5 * log_degree
    scaled = jnp.where(present, sym, 0.0) - half[..., :, None] - half[..., None, :]
    a = jnp.where(present, jnp.exp(scaled), 0.0)  # (..., n, n) in [0, 1], 0 on the diagonal
    # ratio[k, j] = sqrt(d_j / d_k), 0 on the diagonal, so that P_k = sum_j a_kj ratio[k, j]
    # (clipped at e^80 in float32, e^701 in float64: exp and a row's sum stay finite, and
    # degree ratios beyond the square are out of the dtype's reach anyway).
    bound = math.floor(math.log(jnp.finfo(sym.dtype).max)) - 8.0
    ratio = jnp.exp(jnp.clip(half[..., None, :] - half[..., :, None], -bound, bound))
    ratio = jnp.where(jnp.eye(n, dtype=bool), 0.0, ratio)
    alive = jnp.ones(sym.shape[:-1], sym.dtype)  # (..., n): 1 until a node is eliminated

    def eliminate(k, carry):
        a, alive, log_z = carry
        active = ~roots[..., k]  # (...,) roots are kept, never eliminated
        row = a[..., k, :] * alive  # (..., n) k's edges to nodes still in the network
        pivot = jnp.where(active, jnp.sum(row * ratio[..., k, :], axis=-1), 1.0)  # D_k / d_k
        log_pivot = jnp.log(pivot)
        log_z = log_z + jnp.where(active, log_degree[..., k] + log_pivot, 0.0)
        # Kron reduction: a_ij += a_ik a_kj / P_k. Entries in k's row and column (and the
        # diagonal) change too, but are never read again: `alive` and `ratio` mask them.
        # 1 / P_k as exp(-log P_k): the gradient of 1 / P_k would square P_k (and overflow
        # for P_k < 1e-19); this way it stays within P_k's range.
        step = jnp.where(active, jnp.exp(-log_pivot), 0.0)[..., None, None]
        a = a + step * row[..., :, None] * row[..., None, :]
        alive = alive * jnp.where(active[..., None] & (jnp.arange(n) == k), 0.0, 1.0)
        return a, alive, log_z

    log_z = jnp.zeros(sym.shape[:-2], sym.dtype)
    return lax.fori_loop(0, n, eliminate, (a, alive, log_z))[-1]


@jax.jit
def _log_partition(theta, mask=None):
    sym, present = symmetric_graph(theta, mask)
    return _log_partition_of(sym, present, roots_of(present, mask))


@jax.jit
def _log_partition_and_marginals(theta, mask=None):
    """(log Z, marginals): mu = 2 d log Z / d theta, each edge appearing twice in theta."""
    sym, present = symmetric_graph(theta, mask)
    roots = roots_of(present, mask)  # integer labels: no gradient to carry
    log_z, vjp = jax.vjp(lambda s: _log_partition_of(s, present, roots), sym)
    (grad,) = vjp(jnp.ones_like(log_z))  # per graph: d log Z / d sym, (..., n, n)
    mu = jnp.where(present, grad + jnp.swapaxes(grad, -1, -2), 0.0)
    return log_z, mu


@jax.jit
def _log_prob(theta, tree, mask=None):
    sym, present = symmetric_graph(theta, mask)
    tree = jnp.asarray(tree, dtype=bool)
    score = 0.5 * jnp.sum(jnp.where(tree & present, sym, 0.0), axis=(-2, -1))
    outside = jnp.any(tree & ~present, axis=(-2, -1))
    return jnp.where(outside, -jnp.inf, score - _log_partition(theta, mask))
