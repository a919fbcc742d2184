r"""Spanning trees as structured latents: minimum / maximum spanning trees, enumeration.

- `minimum_spanning_tree(weights, mask=None, *, algorithm="prim",
  return_num_components=False)`, `maximum_spanning_tree(...)`,
  `forest_num_components(forest)` (`mst.py`: Kruskal and dense Prim in lax loops);
  `num_components(adjacency)`, `component_labels(adjacency)` (`graph.py`).
- `enumerate_trees(n, mask=None)`: all n^(n-2) spanning trees of K_n (Cayley), n <= 8.

Graphs are dense symmetric (..., n, n) arrays with an optional boolean `mask` (True = edge
present) for missing edges; see `graph.py` for the conventions and the eager checks.
"""

from ssl_gen.structured.enumeration import enumerate_trees
from ssl_gen.structured.graph import component_labels, num_components
from ssl_gen.structured.mst import (
    ALGORITHMS,
    forest_num_components,
    maximum_spanning_tree,
    minimum_spanning_tree,
)

__all__ = [
    "ALGORITHMS",
    "component_labels",
    "enumerate_trees",
    "forest_num_components",
    "maximum_spanning_tree",
    "minimum_spanning_tree",
    "num_components",
]
