"""Minimum / maximum spanning trees against scipy and networkx, with ties and forests."""

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest
import scipy.sparse.csgraph as csgraph

from ssl_gen.structured import spanning_tree as st
from ssl_gen.structured.mst import kruskal_candidates

ALGORITHMS = ("kruskal", "prim")


def random_graphs(rng, batch, n, *, p=0.5, values=(1.0, 2.0, 3.0)):
    """A batch of symmetric weights with many ties, and masks with 1-3 disconnected blocks.

    Returns (weights, mask), both (batch, n, n); off-mask weights are NaN (never read).
    """
    w = rng.choice(np.asarray(values, np.float32), size=(batch, n, n))
    w = np.triu(w, 1)
    w = w + np.swapaxes(w, -1, -2)  # (B, n, n) symmetric
    mask = np.triu(rng.random((batch, n, n)) < p, 1)
    blocks = rng.integers(1, 4, size=(batch, 1)) > np.arange(3)  # which cut points are used
    cuts = np.sort(rng.integers(1, n, size=(batch, 3)), axis=1)
    group = np.sum((np.arange(n)[None, :, None] >= cuts[:, None, :]) & blocks[:, None], -1)
    mask &= group[:, :, None] == group[:, None, :]  # no edge between blocks
    mask = mask | np.swapaxes(mask, -1, -2)
    return np.where(mask, w, np.nan).astype(np.float32), mask


def total_weight(weights, tree):
    return np.nansum(np.where(tree, weights, 0.0), axis=(-2, -1)) / 2


def scipy_mst(weights, mask):
    # scipy reads 0 as "no edge"; every weight here is nonzero.
    forest = csgraph.minimum_spanning_tree(np.where(mask, weights, 0.0))
    return forest.sum(), csgraph.connected_components(mask, directed=False)[0]


def networkx_tree(weights, mask, maximum=False):
    g = nx.Graph()
    g.add_nodes_from(range(weights.shape[-1]))
    i, j = np.nonzero(np.triu(mask, 1))
    g.add_weighted_edges_from(zip(i.tolist(), j.tolist(), weights[i, j].tolist(), strict=True))
    fn = nx.maximum_spanning_tree if maximum else nx.minimum_spanning_tree
    return fn(g).size(weight="weight")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("n", [7, 33])  # 33 > 16: Kruskal's top-k first pass and fallback run
def test_minimum_matches_scipy_and_networkx(algorithm, n):
    rng = np.random.default_rng(n)
    weights, mask = random_graphs(rng, 24, n)
    trees = np.asarray(st.minimum_spanning_tree(weights, mask, algorithm=algorithm))
    for b in range(len(weights)):
        ref_weight, ref_components = scipy_mst(weights[b], mask[b])
        # Integer-valued float32 weights: the sums are exact, so compare exactly.
        assert total_weight(weights[b], trees[b]) == ref_weight
        assert total_weight(weights[b], trees[b]) == networkx_tree(weights[b], mask[b])
        assert trees[b].sum() // 2 == n - ref_components
    assert np.array_equal(trees, np.swapaxes(trees, -1, -2))
    assert not np.any(trees & ~mask)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_vmap_and_jit_match_leading_batch_axes(algorithm):
    rng = np.random.default_rng(7)
    weights, mask = random_graphs(rng, 24, 7)
    fn = jax.jit(jax.vmap(lambda w, m: st.minimum_spanning_tree(w, m, algorithm=algorithm)))
    np.testing.assert_array_equal(
        fn(weights, mask), st.minimum_spanning_tree(weights, mask, algorithm=algorithm)
    )


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_maximum_matches_networkx_with_negative_and_zero_weights(algorithm):
    rng = np.random.default_rng(1)
    weights, mask = random_graphs(rng, 24, 7, values=(-2.0, -1.0, 0.0, 1.0))
    trees, c = st.maximum_spanning_tree(
        weights, mask, algorithm=algorithm, return_num_components=True
    )
    for b in range(len(weights)):
        assert total_weight(weights[b], trees[b]) == networkx_tree(weights[b], mask[b], True)
        assert c[b] == csgraph.connected_components(mask[b], directed=False)[0]


@pytest.mark.parametrize("n", [7, 33])
def test_kruskal_and_prim_return_the_same_forest(n):
    """Ties broken by edge index make the MST unique: same adjacency, not only same weight."""
    rng = np.random.default_rng(2)
    weights, mask = random_graphs(rng, 24, n, p=0.8, values=(0.0, 1.0))  # heavy ties
    for fn in (st.minimum_spanning_tree, st.maximum_spanning_tree):
        kruskal, c_kruskal = fn(weights, mask, algorithm="kruskal", return_num_components=True)
        prim, c_prim = fn(weights, mask, algorithm="prim", return_num_components=True)
        np.testing.assert_array_equal(kruskal, prim)
        np.testing.assert_array_equal(c_kruskal, c_prim)
        # A forest: as many components as edges missing from n - 1, so no cycle.
        np.testing.assert_array_equal(st.num_components(prim), c_prim)
        np.testing.assert_array_equal(st.num_components(mask), c_prim)


def test_ties_go_to_the_smaller_edge_index():
    # K_3 with equal weights: the trees keep edges 0-1 and 0-2 (indices 1, 2 < 1 * 3 + 2).
    for algorithm in ALGORITHMS:
        tree = st.minimum_spanning_tree(jnp.ones((3, 3)), algorithm=algorithm)
        np.testing.assert_array_equal(tree, [[0, 1, 1], [1, 0, 0], [1, 0, 0]])


def test_kruskal_fallback_when_the_tree_needs_an_edge_beyond_the_first_pass():
    n = 40
    rng = np.random.default_rng(3)
    w = rng.random((n, n)).astype(np.float32) + 1.0
    w[0, :] = w[:, 0] = 100.0 + np.arange(n)  # node 0 joins last, by its heaviest-ranked edge
    w = np.triu(w, 1) + np.triu(w, 1).T
    rank = np.sum(np.triu(w, 1)[np.triu_indices(n, 1)] < 100.0)
    assert rank >= kruskal_candidates(n)  # the first pass cannot finish the tree
    connected = np.broadcast_to(~np.eye(n, dtype=bool), (n, n))
    split = connected & (np.arange(n)[:, None] < 20) == (np.arange(n)[None, :] < 20)
    mask = np.stack([connected, split & connected])  # (2, n, n): one connected, one not
    weights = np.stack([w, w])
    for algorithm in ALGORITHMS:
        trees = st.minimum_spanning_tree(weights, mask, algorithm=algorithm)
        for b in range(2):
            ref_weight, _ = scipy_mst(weights[b], mask[b])
            np.testing.assert_allclose(total_weight(weights[b], trees[b]), ref_weight, rtol=1e-6)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_small_and_empty_graphs(algorithm):
    for n in (1, 2):
        tree, c = st.minimum_spanning_tree(
            np.ones((n, n)), algorithm=algorithm, return_num_components=True
        )
        assert tree.shape == (n, n) and int(c) == 1 and tree.sum() == 2 * (n - 1)
    no_edges = np.zeros((5, 5), dtype=bool)
    tree, c = st.minimum_spanning_tree(
        np.ones((5, 5)), no_edges, algorithm=algorithm, return_num_components=True
    )
    assert not tree.any() and int(c) == 5


def test_values_on_missing_edges_are_not_read():
    w = np.ones((4, 4), np.float32)
    mask = ~np.eye(4, dtype=bool)
    mask[0, 1] = mask[1, 0] = False
    w[0, 1] = w[1, 0] = np.nan  # fine: the edge is masked out
    w[2, 3], w[3, 2] = np.inf, -np.inf  # not fine: inf on a present edge
    with pytest.raises(ValueError, match=r"weights\[\(2, 3\)\] is inf"):
        st.minimum_spanning_tree(w, mask)
    mask[2, 3] = mask[3, 2] = False
    assert st.minimum_spanning_tree(w, mask).sum() == 6


@pytest.mark.parametrize(
    ("weights", "mask", "match"),
    [
        ([[0.0, np.nan], [np.nan, 0.0]], None, r"spanning_tree: weights\[\(0, 1\)\] is NaN"),
        ([[0.0, 1.0], [2.0, 0.0]], None, r"weights is not symmetric: weights\[\(0, 1\)\] = 1.0"),
        ([[0.0, 1.0], [1.0, 0.0]], [[False, True], [False, False]], "mask is not symmetric"),
        ([[0.0, 1.0], [1.0, 0.0]], [[0, 1], [1, 0]], "mask must be boolean"),
        ([[0.0, 1.0, 2.0]], None, r"shape \(..., n, n\)"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3), bool), "does not broadcast"),
    ],
)
def test_bad_inputs_are_one_line_errors(weights, mask, match):
    with pytest.raises(ValueError, match=match) as info:
        st.minimum_spanning_tree(np.asarray(weights), None if mask is None else np.asarray(mask))
    assert "\n" not in str(info.value)


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        st.maximum_spanning_tree(np.zeros((3, 3)), algorithm="boruvka")


def test_under_jit_nan_edges_are_dropped_by_both_algorithms():
    """Traced inputs cannot be checked: a NaN weight then removes that edge (documented)."""
    w = np.array([[0, 1, 5], [1, 0, 2], [5, 2, 0]], np.float32)
    w[0, 1] = w[1, 0] = np.nan
    for algorithm in ALGORITHMS:
        fn = jax.jit(lambda w, a=algorithm: st.minimum_spanning_tree(w, algorithm=a))
        np.testing.assert_array_equal(fn(w), [[0, 0, 1], [0, 0, 1], [1, 1, 0]])


def test_leading_batch_axes_and_broadcast_mask():
    rng = np.random.default_rng(4)
    weights, mask = random_graphs(rng, 6, 7)
    weights = np.where(mask, weights, 1.0)  # finite everywhere: reuse one mask for all
    batched = st.minimum_spanning_tree(weights.reshape(2, 3, 7, 7), mask[0])
    for b in range(6):
        single = st.minimum_spanning_tree(weights[b], mask[0])
        np.testing.assert_array_equal(batched.reshape(6, 7, 7)[b], single)
