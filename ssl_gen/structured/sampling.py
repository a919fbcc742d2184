r"""Random spanning trees: exact Gibbs samples (Wilson's algorithm) and perturb-and-MAP.

Exact sampling. Wilson (1996), "Generating random spanning trees more quickly than the
cover time" (STOC): with every node but the root r unvisited, start a random walk at an
unvisited node, moving from i to j with probability q_ij = w_ij / \sum_k w_ik; stop when
the walk hits the tree; add its loop erasure (the last exit from every node it visited)
to the tree; repeat from the next unvisited node. The tree is distributed exactly as
p(T) ∝ \prod_{e \in T} w_e = exp(\sum_{e \in T} theta_e), whatever r and the order of the
starting nodes. Loop erasure costs nothing: each node's `next` pointer is overwritten on
every visit, so following the pointers from the start node retraces the erased path.

Here the walk is a `lax.while_loop` inside a `lax.fori_loop` over the start nodes, one step
drawing a uniform number and inverting the row's cumulative transition probabilities
(built from softmax(theta_i), so exp(theta) never overflows). A disconnected graph gets
one root per component and yields a maximal spanning forest whose trees are independent
Gibbs samples, the forest distribution of `gibbs.py`.

Cost. The expected number of walk steps is the mean commute time between the root and a
node drawn from the walk's stationary distribution (Wilson 1996): about 2n on K_n with
equal scores, O(n^3) at worst for equal weights; but it grows like 1 / w when a bridge of
relative weight w must be crossed, so scores whose differences reach ~15-20 on such cuts
make the loop very long. A transition probability that underflows to 0 (below float32's
~1e-38) would make it endless, so such an edge counts as missing and the sample is then a
forest. `max_steps` caps the total; a capped sample leaves nodes out and is then not exact
(`forest_num_components` tells). Under `vmap`, walks advance in lock-step, so a batch
takes as long as its slowest member. Under `jit` (no eager checks), an edge with a NaN or
infinite score counts as missing.

Perturb-and-MAP. Add independent Gumbel(0, 1) noise g_e to every edge score and take the
maximum spanning tree: T* = argmax_T \sum_{e \in T} (theta_e + g_e). This is the spanning
tree of the stochastic softmax tricks of Paulus et al. (2020), "Gradient Estimation with
Stochastic Softmax Tricks" (NeurIPS), and a random structure that is cheap to draw and to
relax. It is NOT the Gibbs distribution: the Gumbel-max trick is exact only with one
independent Gumbel per *tree* (Papandreou & Yuille 2011; Hazan & Jaakkola 2012); with one
per *edge*, the tree scores \sum_{e \in T} g_e are correlated sums. For example, with
theta = 0 on K_4 the Gibbs distribution is uniform over the 16 trees (4 stars, 12 paths),
while the minimum spanning tree of i.i.d. weights is each star with probability 1/15 and
each path with probability 11/180 (count Kruskal's trees over the 720 edge orders): stars
get 4/15 of the mass instead of 1/4. Larger graphs and scores widen the gap.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from ssl_gen.structured.graph import check_graph, component_labels, symmetric_graph
from ssl_gen.structured.mst import ALGORITHMS, spanning_forest


def sample(key, theta, mask=None, *, max_steps: int | None = None) -> jax.Array:
    """One exact sample from p(T) ∝ exp(\\sum_{e in T} theta_e) per graph (Wilson 1996).

    Args:
      key: a `jax.random` key; for several samples of one graph, `jax.vmap` over keys.
      theta: (..., n, n) symmetric finite edge scores; the diagonal is ignored.
      mask: optional symmetric boolean, broadcastable to theta's shape; False = no edge.
        A disconnected graph gives a maximal spanning forest (independent Gibbs trees).
      max_steps: optional cap on the total number of random-walk steps per graph; None
        (exact, unbounded) by default. See the module docstring for the expected cost.

    Returns:
      (..., n, n) symmetric boolean adjacency of the sampled tree (forest).
    """
    check_graph("sample", "theta", theta, mask)
    if max_steps is None:
        max_steps = _NO_CAP
    elif not 0 <= max_steps <= _NO_CAP:
        raise ValueError(f"sample: max_steps must be None or in [0, 2^31 - 1], got {max_steps}")
    return _sample(key, theta, mask, jnp.int32(max_steps))


def perturb_and_map(key, theta, mask=None, *, algorithm: str = "prim") -> jax.Array:
    """Maximum spanning tree of Gumbel-perturbed scores: argmax_T \\sum_{e in T} theta_e + g_e.

    Not a sample of the Gibbs distribution (see the module docstring; Paulus et al. 2020).

    Args:
      key: a `jax.random` key; one Gumbel(0, 1) per edge {i, j} and graph.
      theta: (..., n, n) symmetric finite edge scores.
      mask: optional symmetric boolean edge mask (disconnected: a spanning forest).
      algorithm: "prim" or "kruskal" (same result, see `minimum_spanning_tree`).

    Returns:
      (..., n, n) symmetric boolean adjacency of the tree (forest).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"perturb_and_map: algorithm must be one of {ALGORITHMS}, got {algorithm!r}"
        )
    check_graph("perturb_and_map", "theta", theta, mask)
    return _perturb_and_map(key, theta, mask, algorithm=algorithm)


@functools.partial(jax.jit, static_argnames="algorithm")
def _perturb_and_map(key, theta, mask, *, algorithm):
    sym, _ = symmetric_graph(theta, mask)
    gumbel = jnp.triu(jax.random.gumbel(key, sym.shape, sym.dtype), k=1)
    gumbel = gumbel + jnp.swapaxes(gumbel, -1, -2)  # one draw per edge, symmetric
    return spanning_forest(sym + gumbel, mask, maximize=True, algorithm=algorithm)


_NO_CAP = 2**31 - 1  # int32 max: ~an hour of walking per graph, i.e. no cap


@jax.jit
def _sample(key, theta, mask, max_steps):
    sym, present = symmetric_graph(theta, mask)
    n = sym.shape[-1]
    batch_shape = sym.shape[:-2]
    # A walk that can never reach its root would never end. So (only reachable under jit,
    # or past float32's range) an edge with a non-finite score, or whose transition
    # probability underflows to 0 in either direction, counts as missing: the components,
    # and so the roots, are those of the edges the walk can use both ways.
    present = present & jnp.isfinite(sym)
    has_edge = jnp.any(present, axis=-1, keepdims=True)
    logits = jnp.where(present, sym, -jnp.inf)
    # Transition probabilities q_ij = softmax_j(theta_ij) over the edges of node i; rows of
    # isolated nodes (roots, never walked from) become 0.
    q = jnp.where(present, jax.nn.softmax(jnp.where(has_edge, logits, 0.0), axis=-1), 0.0)
    usable = (q > 0) & (jnp.swapaxes(q, -1, -2) > 0)
    q = jnp.where(usable, q, 0.0)
    roots = component_labels(usable) == jnp.arange(n)  # (..., n) one per component
    cdf = jnp.cumsum(q, axis=-1)  # (..., n, n)
    # The last neighbour with positive probability: the draw is clipped to it, in case
    # rounding puts the uniform at (or above) the row's total.
    last = n - 1 - jnp.argmax(jnp.flip(q > 0, axis=-1), axis=-1).astype(jnp.int32)  # (..., n)
    num = math.prod(batch_shape)
    keys = jax.random.split(key, num)
    walk = functools.partial(_wilson, max_steps=max_steps)  # traced: one compilation
    tree = jax.vmap(walk)(
        keys,
        cdf.reshape((num, n, n)),  # (B, n, n)
        last.reshape((num, n)),  # (B, n)
        roots.reshape((num, n)),  # (B, n)
    )
    return tree.reshape(batch_shape + (n, n))


def _wilson(key, cdf, last, roots, *, max_steps):
    """Wilson's algorithm on one graph: cdf (n, n), last (n,), roots (n,) -> (n, n) bool."""
    n = cdf.shape[-1]

    def from_node(start, carry):
        in_tree, nxt, steps = carry
        # Node indices are int32 in both modes (the loop index is int64 under x64).
        start = start.astype(jnp.int32)

        def walking(c):
            u, _, steps = c
            return ~in_tree[u] & (steps < max_steps)

        def step(c):
            u, nxt, steps = c
            # Step t's uniform comes from fold_in(key, t): one stream per graph, a distinct
            # counter per step (4x cheaper than splitting the key at every step).
            r = jax.random.uniform(jax.random.fold_in(key, steps), dtype=cdf.dtype)
            v = jnp.sum(cdf[u] <= r * cdf[u, -1], dtype=jnp.int32)  # first entry above r
            v = jnp.minimum(v, last[u])
            return v, nxt.at[u].set(v), steps + 1

        end, nxt, steps = lax.while_loop(walking, step, (start, nxt, steps))
        reached = in_tree[end]  # False only when max_steps cut the walk short

        # Retrace from the start along the last exits: the loop-erased path joins the tree.
        def retracing(c):
            u, in_tree = c
            return reached & ~in_tree[u]

        def add(c):
            u, in_tree = c
            return nxt[u], in_tree.at[u].set(True)

        _, in_tree = lax.while_loop(retracing, add, (start, in_tree))
        return in_tree, nxt, steps

    init = (roots, jnp.arange(n, dtype=jnp.int32), jnp.int32(0))
    in_tree, nxt, _ = lax.fori_loop(0, n, from_node, init)
    attached = (in_tree & ~roots).astype(jnp.int32)  # nodes with an edge to nxt
    adj = jnp.zeros((n, n), jnp.int32).at[jnp.arange(n, dtype=jnp.int32), nxt].add(attached) > 0
    return adj | adj.T
