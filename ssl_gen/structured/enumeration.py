r"""All spanning trees of a small graph, by decoding every Prüfer sequence.

Cayley's formula: K_n has n^(n-2) labelled spanning trees, in bijection with the Prüfer
sequences, i.e. the words of length n - 2 over the n nodes (Prüfer 1918). Decoding: a
node's degree is 1 + its number of occurrences; at each step join the smallest leaf to the
next letter and decrement both degrees; finally join the two nodes of degree 1 left.
Spanning trees of a graph G ⊆ K_n are the trees of K_n whose edges are all in G.

This is for exact tests and exact gradients (sum over all trees) on n <= 8 nodes; the
decoding is vectorised over the sequences in numpy, outside any jit.
"""

import functools

import numpy as np

MAX_NODES = 8  # 8^6 = 262,144 trees, 16 MiB of boolean adjacency


def enumerate_trees(n: int, mask=None) -> np.ndarray:
    """Every spanning tree of K_n (or of the graph `mask`), as boolean adjacency matrices.

    Args:
      n: number of nodes, 1 <= n <= 8.
      mask: optional (n, n) symmetric boolean adjacency of a graph G; only the trees of
        K_n that use edges of G are kept (none if G is disconnected).

    Returns:
      A read-only (T, n, n) numpy bool array, T = n^(n-2) for K_n (T = 1 for n = 1, 2), in
      Prüfer-sequence lexicographic order; each entry symmetric with n - 1 edges.
    """
    if not isinstance(n, int | np.integer) or not 1 <= n <= MAX_NODES:
        raise ValueError(
            f"enumerate_trees: n must be an int in [1, {MAX_NODES}] (n^(n-2) trees), got {n!r}"
        )
    trees = _complete_graph_trees(int(n))
    if mask is None:
        return trees
    mask = np.asarray(mask)
    if mask.shape != (n, n) or mask.dtype != bool:
        raise ValueError(
            f"enumerate_trees: mask must be an ({n}, {n}) boolean array, "
            f"got {mask.dtype} {mask.shape}"
        )
    if not np.array_equal(mask, mask.T):
        raise ValueError("enumerate_trees: mask is not symmetric; pass mask | mask.T")
    keep = ~np.any(trees & ~mask, axis=(-2, -1))  # (T,) trees using only edges of G
    out = trees[keep]
    out.flags.writeable = False
    return out


@functools.cache
def _complete_graph_trees(n: int) -> np.ndarray:
    if n == 1:
        trees = np.zeros((1, 1, 1), dtype=bool)
    else:
        # All words of length n - 2 over range(n), lexicographic: (T, n - 2).
        words = np.indices((n,) * (n - 2)).reshape(n - 2, n ** (n - 2)).T
        num = words.shape[0]
        rows = np.arange(num)
        degree = np.ones((num, n), dtype=np.int64)
        np.add.at(degree, (rows[:, None], words), 1)  # (T, n)
        trees = np.zeros((num, n, n), dtype=bool)
        for step in range(n - 2):
            leaf = np.argmax(degree == 1, axis=1)  # (T,) smallest leaf of each tree
            other = words[:, step]
            trees[rows, leaf, other] = trees[rows, other, leaf] = True
            degree[rows, leaf] -= 1
            degree[rows, other] -= 1
        # The two nodes of degree 1 left: (T, 2).
        last = np.argsort(degree != 1, axis=1, kind="stable")[:, :2]
        trees[rows, last[:, 0], last[:, 1]] = trees[rows, last[:, 1], last[:, 0]] = True
    trees.flags.writeable = False
    return trees
