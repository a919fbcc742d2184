r"""Minimum and maximum spanning trees (forests) of dense graphs: jittable, batched.

A spanning tree of a connected graph G = (V, E) with weights w is a set T of |V| - 1 edges
without cycles; a minimum spanning tree minimises w(T) = \sum_{e \in T} w_e (a maximum
spanning tree maximises it, i.e. minimises -w). If G is disconnected the same algorithms
return a minimum spanning *forest*: one minimum spanning tree per connected component,
|V| - c edges for c components. Both algorithms below rest on the cut property: the lightest
edge crossing any cut belongs to some MST, and to *the* MST when the edge order is strict.

The edge order here is strict: edges compare by weight, then by edge index i * n + j
(i < j). So the MST is unique, and Kruskal and Prim return the same adjacency matrix (not
only the same total weight), whatever the ties.

- Kruskal (1956): sort the edges, scan them in order and keep an edge when its endpoints are
  in different components of the forest built so far. The union-find structure is the
  "quick-find" one: a component label per node, relabelled with one O(n) vector op per
  kept edge. Under `vmap` that beats pointer-chasing `find` loops, whose data-dependent
  `while_loop`s run in lock-step across the batch. The scan is a `lax.while_loop` that
  stops once n - 1 edges are kept (after about (n / 2) ln n edges for i.i.d. weights), so
  the edges are first narrowed to the n (log2 n + 4) smallest with `lax.top_k` (O(m),
  versus O(m log m) for the full sort with m = n(n-1)/2; XLA's CPU sort is slow), falling
  back to all edges when that pass cannot complete the forest (`kruskal_candidates`).
- Prim (1957), dense version: grow one tree from node 0, keeping for every outside node its
  best edge into the tree; each of the n steps of a `lax.fori_loop` adds the best outside
  node and relaxes its row: O(n^2) work, n sequential steps of O(n) vector work. When no
  outside node is reachable a new component starts at the smallest outside node.

Batches of graphs run through `jax.vmap` of the single-graph loops (loops of different
graphs advance in lock-step). See `graph.py` for the mask convention and the eager checks;
under `jit`, an edge whose (symmetrised) weight is NaN is treated as missing and +-inf
weights are ordinary extreme weights.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ssl_gen.structured.graph import check_graph, edge_index, symmetric_graph

ALGORITHMS = ("kruskal", "prim")


def minimum_spanning_tree(
    weights, mask=None, *, algorithm: str = "prim", return_num_components: bool = False
):
    """Minimum spanning tree (forest, if the graph is disconnected) of each graph in a batch.

    Args:
      weights: (..., n, n) symmetric real edge weights; any sign; the diagonal is ignored.
      mask: optional boolean, broadcastable to `weights`' shape, symmetric; False marks a
        missing edge (its weight is never read). None means the complete graph.
      algorithm: "prim" (the default: the faster one on dense graphs, see
        benchmarks/bench_mst.py) or "kruskal"; both return the same tree, ties being
        broken by edge index.
      return_num_components: also return the number of connected components c; the forest
        has n - c edges and is a spanning tree exactly when c == 1.

    Returns:
      (..., n, n) symmetric boolean adjacency matrix of the forest, and, when asked, the
      (...,) int32 number of components.

    Raises:
      ValueError: (concrete inputs only) bad shape, NaN or +-inf weight on an edge,
        non-symmetric weights or mask, or an unknown algorithm.
    """
    return _public("minimum_spanning_tree", weights, mask, algorithm, False, return_num_components)


def maximum_spanning_tree(
    weights, mask=None, *, algorithm: str = "prim", return_num_components: bool = False
):
    """Maximum spanning tree (forest): the minimum spanning tree of -weights.

    Same arguments, returns and errors as `minimum_spanning_tree`; ties are still broken in
    favour of the smaller edge index.
    """
    return _public("maximum_spanning_tree", weights, mask, algorithm, True, return_num_components)


def forest_num_components(forest) -> jax.Array:
    """Number of trees in a spanning forest: n - (number of edges). (..., n, n) -> (...,)."""
    forest = jnp.asarray(forest, dtype=bool)
    n = forest.shape[-1]
    num_edges = jnp.sum(forest, axis=(-2, -1), dtype=jnp.int32) // 2
    return n - num_edges


def _public(fn, weights, mask, algorithm, maximize, return_num_components):
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{fn}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    check_graph(fn, "weights", weights, mask)
    forest = spanning_forest(weights, mask, maximize=maximize, algorithm=algorithm)
    if return_num_components:
        return forest, forest_num_components(forest)
    return forest


@functools.partial(jax.jit, static_argnames="algorithm")
def spanning_forest(weights, mask=None, *, maximize, algorithm: str) -> jax.Array:
    """The unchecked core of `minimum_spanning_tree` / `maximum_spanning_tree`.

    `maximize` is a traced boolean (one compilation serves both); other args as there.
    """
    sym, present = symmetric_graph(weights, mask)
    present = present & ~jnp.isnan(sym)
    key = jnp.where(maximize, -sym, sym)
    # Missing edges get key 0 (never read); -0.0 becomes 0.0 so both sort the same way.
    key = jnp.where(present & (key != 0), key, jnp.zeros_like(key))
    n = key.shape[-1]
    batch_shape = key.shape[:-2]
    key = key.reshape((-1, n, n))  # (B, n, n)
    present = present.reshape((-1, n, n))  # (B, n, n)
    if algorithm == "kruskal":
        forest = _kruskal_batch(key, present)  # (B, n, n)
    else:
        forest = jax.vmap(_prim)(key, present)  # (B, n, n)
    return forest.reshape(batch_shape + (n, n))


def kruskal_candidates(n: int) -> int:
    """How many of the smallest edges Kruskal's first pass looks at: n (log2 n + 4), <= m.

    On a connected graph Kruskal stops at the edge that completes the tree. For i.i.d.
    weights on K_n that edge has rank about (n / 2) ln n (the connectivity threshold of the
    random graph G(n, p) is p = ln n / n), well inside this budget; graphs that need more,
    and disconnected graphs (which scan every edge), take the full sort.
    """
    m = n * (n - 1) // 2
    return min(m, n * (int(np.ceil(np.log2(max(n, 2)))) + 4))


def _kruskal_batch(key, present):
    """Kruskal on a batch. key, present: (B, n, n). Returns the (B, n, n) boolean forests.

    A full sort of the m = n(n-1)/2 edges dominates the cost (XLA's CPU sort is slow), so a
    first pass takes only the `kruskal_candidates(n)` smallest edges (`lax.top_k`, which
    keeps the lower index first among equal values: a prefix of the strict edge order).
    Where that pass cannot certify its forest, every graph of the batch is redone with the
    full sort (`lax.cond` at batch level; under an outer `vmap` it becomes a select and both
    passes run).
    """
    n = key.shape[-1]
    m = n * (n - 1) // 2
    k = kruskal_candidates(n)
    forest, exact = jax.vmap(functools.partial(_kruskal, num_candidates=k))(key, present)
    if k == m:
        return forest
    full = lambda: jax.vmap(functools.partial(_kruskal, num_candidates=m))(key, present)[0]
    return lax.cond(jnp.all(exact), lambda: forest, full)


def _kruskal(key, present, *, num_candidates: int):
    """Kruskal on one graph over its `num_candidates` smallest edges.

    Args:
      key: (n, n) sort keys (weights, or -weights for a maximum tree), 0 on missing edges.
      present: (n, n) boolean edge set.
      num_candidates: how many edges to consider, at most m = n(n-1)/2.

    Returns:
      (forest, exact): the (n, n) boolean forest, and whether it is the full-graph answer
      (the tree was completed, or every present edge was a candidate).
    """
    n = key.shape[-1]
    iu, ju = np.triu_indices(n, k=1)  # (m,) each, in edge-index order
    m = iu.size
    if m == 0:
        return jnp.zeros((n, n), dtype=bool), jnp.array(True)
    edge_key, edge_present = key[iu, ju], present[iu, ju]  # (m,) each
    # lax.top_k sorts by value, the lower index first among equal values: on -key that is
    # the strict (key, edge index) order. Missing edges go to -inf, after every present
    # finite edge; zero keys become +0.0, since top_k orders -0.0 below +0.0.
    neg = jnp.where(edge_present, -edge_key, -jnp.inf)
    order = lax.top_k(jnp.where(neg == 0, 0.0, neg), num_candidates)[1]  # (K,) edge indices
    # Under jit, a present +inf key shares -inf with missing edges; both keep index order
    # there, so the present candidates are still a prefix of the strict order.
    src, dst = jnp.asarray(iu, jnp.int32)[order], jnp.asarray(ju, jnp.int32)[order]  # (K,)
    usable = edge_present[order]  # (K,)
    num_present = jnp.sum(usable, dtype=jnp.int32)
    position = jnp.arange(1, num_candidates + 1, dtype=jnp.int32)
    stop = jnp.max(jnp.where(usable, position, 0))  # one past the last usable candidate

    def body(state):
        k, added, comp, tree_u, tree_v = state
        u, v = src[k], dst[k]
        cu, cv = comp[u], comp[v]
        join = usable[k] & (cu != cv)
        # Union: relabel v's component with u's label (an O(n) vector op, no inner loop).
        comp = jnp.where(join & (comp == cv), cu, comp)
        # Slot `added` holds the latest edge; it only counts once `added` moves past it.
        tree_u, tree_v = tree_u.at[added].set(u), tree_v.at[added].set(v)
        return k + 1, added + join, comp, tree_u, tree_v

    def cond(state):
        k, added = state[0], state[1]
        return (k < stop) & (added < n - 1)

    init = (
        jnp.int32(0),
        jnp.int32(0),
        jnp.arange(n, dtype=jnp.int32),  # component label of each node
        jnp.zeros(n, jnp.int32),  # tree edges, endpoint u (slots < added are kept)
        jnp.zeros(n, jnp.int32),  # tree edges, endpoint v
    )
    _, added, _, tree_u, tree_v = lax.while_loop(cond, body, init)
    kept = (jnp.arange(n, dtype=jnp.int32) < added).astype(jnp.int32)
    upper = jnp.zeros((n, n), jnp.int32).at[tree_u, tree_v].add(kept) > 0
    exact = (added == n - 1) | (num_present == jnp.sum(edge_present, dtype=jnp.int32))
    return upper | upper.T, exact


def _prim(key, present):
    """Dense Prim on one graph. key, present: (n, n). Returns the (n, n) boolean forest."""
    n = key.shape[-1]
    eidx = jnp.asarray(edge_index(n), jnp.int32)  # (n, n) tie-break order
    no_edge = n * n  # larger than every edge index

    def body(_, state):
        in_tree, best_key, best_idx, best_from, parent = state
        outside = ~in_tree
        reach = outside & (best_idx < no_edge)
        any_reach = jnp.any(reach)
        # The next node is the outside node whose best edge is smallest in (key, index).
        kmin = jnp.min(jnp.where(reach, best_key, jnp.inf))
        imin = jnp.min(jnp.where(reach & (best_key == kmin), best_idx, no_edge))
        # argmax returns the default int (int64 under jax_enable_x64): node indices are
        # int32 throughout, so the loop carry keeps one dtype in both modes.
        v_edge = jnp.argmax(reach & (best_idx == imin)).astype(jnp.int32)
        # Nothing reachable: a new component starts at the smallest outside node.
        v_root = jnp.argmax(outside).astype(jnp.int32)
        v = jnp.where(any_reach, v_edge, v_root)
        parent = parent.at[v].set(jnp.where(any_reach, best_from[v], -1))
        in_tree = in_tree.at[v].set(True)
        # Relax v's row: keep the smaller (key, index) edge into the tree for each outside node.
        row_key, row_idx = key[v], eidx[v]
        better = (present[v] & ~in_tree) & (
            (best_idx == no_edge)
            | (row_key < best_key)
            | ((row_key == best_key) & (row_idx < best_idx))
        )
        best_key = jnp.where(better, row_key, best_key)
        best_idx = jnp.where(better, row_idx, best_idx)
        best_from = jnp.where(better, v, best_from)
        return in_tree, best_key, best_idx, best_from, parent

    init = (
        jnp.zeros(n, dtype=bool),
        jnp.zeros(n, key.dtype),
        jnp.full(n, no_edge, jnp.int32),
        jnp.zeros(n, jnp.int32),
        jnp.full(n, -1, jnp.int32),
    )
    parent = lax.fori_loop(0, n, body, init)[-1]  # (n,), -1 at component roots
    adj = jnp.zeros((n, n), dtype=bool).at[jnp.arange(n), jnp.maximum(parent, 0)].set(parent >= 0)
    return adj | adj.T
