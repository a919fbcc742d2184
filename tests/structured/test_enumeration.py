"""enumerate_trees: Cayley's count, every entry a distinct spanning tree, mask filtering."""

import numpy as np
import pytest
import scipy.sparse.csgraph as csgraph

from ssl_gen.structured import spanning_tree as st


@pytest.mark.parametrize("n", range(1, 8))
def test_cayley_count_and_every_entry_is_a_distinct_spanning_tree(n):
    trees = st.enumerate_trees(n)
    assert trees.shape == (n ** (n - 2) if n > 1 else 1, n, n)  # Cayley; one tree for n = 1
    assert trees.dtype == bool and not trees.flags.writeable
    assert np.array_equal(trees, np.swapaxes(trees, -1, -2))
    assert not np.any(trees[:, np.arange(n), np.arange(n)])
    assert np.all(trees.sum(axis=(-2, -1)) == 2 * (n - 1))
    # n - 1 edges and connected <=> a spanning tree.
    for tree in trees[:: max(1, len(trees) // 200)]:  # a 200-tree spread keeps this fast
        assert csgraph.connected_components(tree, directed=False)[0] == 1
    flat = np.packbits(trees.reshape(len(trees), -1), axis=1)
    assert len(np.unique(flat, axis=0)) == len(trees)


def test_mask_keeps_the_trees_of_the_subgraph():
    # The 4-cycle 0-1-2-3-0 has 4 spanning trees (drop one edge); add the chord 0-2: 8.
    cycle = np.zeros((4, 4), dtype=bool)
    for i in range(4):
        cycle[i, (i + 1) % 4] = cycle[(i + 1) % 4, i] = True
    assert len(st.enumerate_trees(4, cycle)) == 4
    chord = cycle.copy()
    chord[0, 2] = chord[2, 0] = True
    trees = st.enumerate_trees(4, chord)
    assert len(trees) == 8 and not np.any(trees & ~chord)
    disconnected = np.zeros((4, 4), dtype=bool)
    disconnected[0, 1] = disconnected[1, 0] = disconnected[2, 3] = disconnected[3, 2] = True
    assert len(st.enumerate_trees(4, disconnected)) == 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0,), r"n must be an int in \[1, 8\]"),
        ((9,), r"n must be an int in \[1, 8\]"),
        ((3, np.ones((3, 3))), "boolean"),
        ((3, np.triu(np.ones((3, 3), bool))), "not symmetric"),
    ],
)
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        st.enumerate_trees(*args)
