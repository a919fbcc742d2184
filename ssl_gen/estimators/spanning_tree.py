r"""`SpanningTree`: the Gibbs distribution over spanning trees as an estimator distribution.

For symmetric edge scores theta on a graph G (a static boolean `mask`, None = complete),

    p_theta(T) = exp(\sum_{e \in T} theta_e) / Z(theta),   T a spanning tree of G,

an exponential family whose log-partition is Kirchhoff's matrix-tree determinant and whose
mean is the vector of edge marginals mu = P(e in T) (`ssl_gen.structured.spanning_tree`).
A sample is a symmetric 0./1. float adjacency matrix; the trailing (n, n) axes are the
event axes (f maps a tree to a scalar, or to a prefix of the batch shape).

What each estimator does with it (the relaxation interface of `distributions.py`):

- `score_function(...)` (every baseline): exact Gibbs samples (Wilson 1996) and the exact
  log_prob (Kirchhoff): unbiased.
- `exact()`: the sum over `support()`, every spanning tree (n <= 8): the true value and
  gradient, for tests and small experiments.
- `gumbel_softmax(tau)`: the stochastic softmax trick for spanning trees (Paulus et al.
  2020, "Gradient Estimation with Stochastic Softmax Tricks", NeurIPS, Sec. 4 and App. on
  spanning trees): perturb every edge, U = theta + G with G_e ~ Gumbel(0, 1) i.i.d., and
  evaluate f at the relaxed tree X_tau = marginals(U / tau), the edge marginals of the
  Gibbs distribution with scores U / tau: the mean of the entropy-regularized linear
  program max_{x in conv(trees)} <U, x> + tau H(x) over the spanning-tree polytope. As
  tau -> 0 it tends to the hard tree argmax_T <U, T> = `perturb_and_map` with the same
  noise. Biased (f is evaluated inside the polytope, and the hard trees are distributed
  by perturb-and-MAP, not by p_theta).
- `straight_through_gumbel(tau)`: forward f(argmax_T <U, T>), the maximum spanning tree of
  the perturbed scores; backward the gradient of X_tau with the same noise. Biased.
- `straight_through()`: forward f at an exact Gibbs sample, backward as if it were mu.
- `pathwise`, `measure_valued`, `arm`/`disarm`, `indecater`, `reinmax` do not apply
  (no reparameterization, not a product of independent variables); each refuses with a
  one-line error.

Note that the relaxed estimators' forward samples come from perturb-and-MAP, a different
distribution from p_theta (see `ssl_gen.structured.sampling`): their objective is
E_G[f(argmax_T <theta + G, T>)], which the score function's and exact's is not.

The mask is part of the *structure* (`StaticMask`, a pytree node with no leaves), not a
traced array: the graph is fixed when the distribution is built, so `support()` can
enumerate it under `jit`, and `jax.grad` with respect to the distribution sees theta only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.structured import spanning_tree as st
from ssl_gen.structured.enumeration import MAX_NODES


@jax.tree_util.register_pytree_node_class
class StaticMask:
    """An immutable boolean edge mask carried in a pytree's structure (it has no leaves).

    Equal masks compare and hash equal, so `jit` caches by the graph; the array is a
    read-only numpy copy, always concrete (`mask.array`).
    """

    __slots__ = ("array", "_key")

    def __init__(self, mask):
        if isinstance(mask, jax.core.Tracer):
            raise ValueError(
                "SpanningTree: mask must be concrete (a numpy or jax bool array built outside "
                "jit/vmap): the graph is static; only theta may be traced"
            )
        array = np.array(mask)
        if array.dtype != bool:
            raise ValueError(f"SpanningTree: mask must be boolean (True = edge), got {array.dtype}")
        array.flags.writeable = False
        self.array = array
        self._key = (array.shape, array.tobytes())

    def __eq__(self, other):
        return isinstance(other, StaticMask) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        return f"StaticMask(shape={self.array.shape}, edges={int(self.array.sum()) // 2})"

    def tree_flatten(self):
        return (), self

    @classmethod
    def tree_unflatten(cls, aux, children):
        del children
        return aux


class _Fields(NamedTuple):
    theta: jax.Array
    mask: StaticMask | None = None


class SpanningTree(_Fields):
    r"""The Gibbs distribution p(T) ∝ exp(\sum_{e in T} theta_e) over spanning trees.

    Args (fields):
      theta: (..., n, n) symmetric edge scores; the diagonal and missing edges are ignored.
        `batch_shape` is theta.shape[:-2]: independent trees, one per graph.
      mask: None (complete graph) or a concrete symmetric boolean array broadcastable to
        theta's shape, True = edge present; stored as a `StaticMask`. A disconnected graph
        gives maximal spanning forests (see `ssl_gen.structured.spanning_tree`).

    Samples are symmetric 0./1. float adjacency matrices of shape `shape + batch_shape +
    (n, n)`; `log_prob` is over the batch shape (the (n, n) event axes are summed).
    """

    __slots__ = ()

    has_rsample = False  # class constants, not pytree fields
    is_discrete = True  # support() and the perturb / hard / soft / mean relaxation interface

    def __new__(cls, theta, mask=None):
        if mask is not None and not isinstance(mask, StaticMask):
            mask = StaticMask(mask)
        return super().__new__(cls, theta, mask)

    @property
    def _mask(self):
        return None if self.mask is None else self.mask.array

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return jnp.shape(self.theta)[:-2]

    @property
    def num_nodes(self) -> int:
        return jnp.shape(self.theta)[-1]

    @property
    def num_classes(self) -> int:
        """The number of spanning trees of each graph (the largest over a batch): the size
        of one variable's support, which `exact` reads to bound its enumeration. Beyond
        n = 8 nodes, Cayley's bound n^(n-2)."""
        n = self.num_nodes
        if n > MAX_NODES:
            return n ** (n - 2)
        return max(len(st.enumerate_trees(n, m)) for m in self._graph_masks())

    @property
    def logits(self):
        raise AttributeError(
            "SpanningTree has no logits (it is not a product of independent variables): use "
            "score_function, exact, gumbel_softmax or straight_through_gumbel (the stochastic "
            "softmax trick) or straight_through; reinmax, arm, disarm and indecater do not apply"
        )

    def _graph_masks(self) -> list[np.ndarray]:
        """One concrete (n, n) mask per batch element, flattened over the batch shape."""
        n = self.num_nodes
        full = np.ones((n, n), bool) if self.mask is None else self.mask.array
        full = np.broadcast_to(full, self.batch_shape + (n, n))
        return list(full.reshape((-1, n, n)))

    def _dtype(self):
        return jnp.result_type(self.theta, float)

    # --- sampling, probabilities ---------------------------------------------------------

    def sample(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """Exact Gibbs samples (Wilson's algorithm), `shape + batch_shape + (n, n)` floats."""
        shape = tuple(shape)
        num = math.prod(shape)
        theta = jax.lax.stop_gradient(self.theta)
        keys = jax.random.split(key, num)
        trees = jax.vmap(lambda k: st.sample(k, theta, self._mask))(keys)
        return trees.astype(self._dtype()).reshape(shape + jnp.shape(trees)[1:])

    def log_prob(self, z: jax.Array) -> jax.Array:
        """log p(T) = \\sum_{e in T} theta_e - log Z(theta) for a 0./1. adjacency z: (...)."""
        return st.log_prob(self.theta, jnp.asarray(z) > 0.5, self._mask)

    def entropy(self) -> jax.Array:
        """H(p) = log Z - \\sum_e mu_e theta_e, in nats, over the batch shape."""
        return st.entropy(self.theta, self._mask)

    def mean(self) -> jax.Array:
        """E[T] = the edge marginals mu (Kirchhoff), (..., n, n) symmetric."""
        return st.marginals(self.theta, self._mask)

    def log_partition(self) -> jax.Array:
        return st.log_partition(self.theta, self._mask)

    def kl(self, other: SpanningTree) -> jax.Array:
        """KL(self || other) on the same graph, in closed form for an exponential family:
        log Z_q - log Z_p + \\sum_{e} mu_p,e (theta_p,e - theta_q,e)."""
        if other.mask != self.mask:
            raise ValueError("SpanningTree.kl: both distributions must have the same mask")
        mu = self.mean()
        diff = jnp.where(mu > 0, self.theta - other.theta, 0.0)
        # Symmetric sum: each edge appears twice.
        linear = 0.5 * jnp.sum(mu * 0.5 * (diff + jnp.swapaxes(diff, -1, -2)), axis=(-2, -1))
        return other.log_partition() - self.log_partition() + linear

    def broadcast(self) -> SpanningTree:
        """Itself: theta already has `batch_shape` as a prefix."""
        return self

    def support(self) -> jax.Array:
        """Every joint value: (N, *batch_shape, n, n) 0./1. floats, N = \\prod_b T_b (n <= 8).

        The spanning trees of each graph (`enumerate_trees`), and for a batch of graphs
        their Cartesian product (the batch elements are independent).
        """
        n = self.num_nodes
        if n > MAX_NODES:
            raise ValueError(
                f"SpanningTree.support: n = {n} nodes has up to n^(n-2) trees; enumeration "
                f"is for n <= {MAX_NODES}"
            )
        per_graph = [st.enumerate_trees(n, m) for m in self._graph_masks()]  # [(T_b, n, n)]
        counts = [len(t) for t in per_graph]
        if min(counts) == 0:
            raise ValueError("SpanningTree.support: a graph in the batch is disconnected")
        index = np.indices(counts).reshape(len(counts), -1)  # (B, N) one tree per graph
        joint = np.stack([t[i] for t, i in zip(per_graph, index, strict=True)], axis=1)
        out = joint.reshape((-1,) + self.batch_shape + (n, n))  # (N, *batch, n, n)
        return jnp.asarray(out, self._dtype())

    # --- the stochastic softmax trick (Paulus et al. 2020) -------------------------------

    def perturb(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """U = theta + G, one Gumbel(0, 1) per edge (symmetric): `shape + theta.shape`.

        With shape=() the noise is that of `perturb_and_map(key, theta)`, so
        `hard(perturb(key))` is its tree.
        """
        theta = jnp.asarray(self.theta, self._dtype())
        sym = 0.5 * (theta + jnp.swapaxes(theta, -1, -2))
        gumbel = jnp.triu(jax.random.gumbel(key, tuple(shape) + sym.shape, sym.dtype), k=1)
        return sym + gumbel + jnp.swapaxes(gumbel, -1, -2)

    def hard(self, perturbed: jax.Array) -> jax.Array:
        """The maximum spanning tree argmax_T <U, T> as 0./1. floats (no gradient)."""
        tree = st.maximum_spanning_tree(jax.lax.stop_gradient(perturbed), self._mask)
        return tree.astype(jnp.result_type(perturbed, float))

    def soft(self, perturbed: jax.Array, temperature) -> jax.Array:
        """The relaxed tree X_tau = marginals(U / tau): a point of the spanning-tree
        polytope, the maximizer of <U, x> + tau H(x) (Paulus et al. 2020); -> hard as tau
        -> 0. Float32 limit: score gaps of U / tau beyond ~85 nats lose the log-partition
        (see `structured/gibbs.py`), so keep tau >~ max gap / 80 or enable x64."""
        return st.marginals(perturbed / temperature, self._mask)

    def conditional_perturb(self, key: jax.Array, hard: jax.Array) -> jax.Array:
        """Not available: U given argmax_T <U, T> = hard has no closed-form sampler."""
        del key, hard
        raise ValueError(
            "SpanningTree: the Gumbel noise conditioned on its maximum spanning tree has no "
            "closed-form sampler, so gumbel_rao, rebar and relax do not apply; use "
            "score_function, exact, gumbel_softmax or straight_through_gumbel"
        )
