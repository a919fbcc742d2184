r"""Spanning trees as structured latents: MST, the Gibbs distribution, exact samplers.

The public names, by concept (the code lives in the sibling modules):

- Graph algorithms (`mst.py`): `minimum_spanning_tree(weights, mask=None, *,
  algorithm="prim", return_num_components=False)`, `maximum_spanning_tree(...)`,
  `forest_num_components(forest)`; `num_components(adjacency)` and
  `component_labels(adjacency)` (`graph.py`).
- Enumeration (`enumeration.py`): `enumerate_trees(n, mask=None)`, all n^(n-2) spanning
  trees of K_n (Cayley) for n <= 8, for exact tests and exact gradients.
- The Gibbs distribution p(T) ∝ exp(\sum_{e \in T} theta_e) (`gibbs.py`):
  `log_partition(theta)` by Kirchhoff's matrix-tree theorem (1847), `marginals(theta)`,
  `log_prob(theta, tree)`, `entropy(theta)`; exact samples by Wilson's algorithm,
  `sample(key, theta)` (Wilson 1996, "Generating random spanning trees more quickly than
  the cover time"; `sampling.py`).
- Perturb-and-MAP (`sampling.py`): `perturb_and_map(key, theta)`, the maximum spanning tree
  of Gumbel-perturbed scores used by Paulus et al. (2020), "Gradient Estimation with
  Stochastic Softmax Tricks". It is not the Gibbs distribution (shown in the tests).

Conventions shared by all of them:

- A batch of graphs on n nodes is a dense symmetric (..., n, n) array (`weights` for the
  MST, `theta` for the distributions), with the diagonal ignored.
- Missing edges are marked by a separate boolean `mask` (same shape, or broadcastable; True
  = edge present; None = complete graph), never by +-inf or 0 in the values: values on
  missing edges are not read. Trees come back as symmetric boolean adjacency matrices.
- A disconnected graph has no spanning tree: every function then works with maximal
  spanning forests (one tree per component): the MST functions return a minimum spanning
  forest (and, with `return_num_components=True`, the number of components c; the forest
  has n - c edges), `sample` draws independent Gibbs trees per component and
  `log_partition` etc. describe that product distribution.
- Ties are broken by edge index i * n + j (i < j), so results are deterministic and
  Kruskal and Prim return the same tree.
- Concrete inputs are checked eagerly: a NaN or infinite value on an edge, a non-symmetric
  array or mask, or a wrong shape is a one-line `ValueError`. Traced inputs (inside `jit`,
  `vmap`, `grad`) are not checked: the symmetric part (x + x^T) / 2 and mask & mask^T are
  used; the MST functions and `sample` treat an edge with a NaN (for `sample`, any
  non-finite) value as missing; `log_partition`, `marginals` etc. propagate NaN.
- Everything is jittable; batching is over the leading axes, or with `jax.vmap`.

Example::

    from ssl_gen.structured import spanning_tree as st
    tree = st.minimum_spanning_tree(weights)                  # (..., n, n) bool
    logz = st.log_partition(theta)                            # (...,)
    mu = st.marginals(theta)                                  # (..., n, n), sum_{i<j} = n - 1
    trees = jax.vmap(lambda k: st.sample(k, theta))(keys)     # exact Gibbs samples
"""

from ssl_gen.structured.enumeration import enumerate_trees
from ssl_gen.structured.gibbs import entropy, log_partition, log_prob, marginals
from ssl_gen.structured.graph import component_labels, num_components
from ssl_gen.structured.mst import (
    ALGORITHMS,
    forest_num_components,
    maximum_spanning_tree,
    minimum_spanning_tree,
)
from ssl_gen.structured.sampling import perturb_and_map, sample

__all__ = [
    "ALGORITHMS",
    "component_labels",
    "entropy",
    "enumerate_trees",
    "forest_num_components",
    "log_partition",
    "log_prob",
    "marginals",
    "maximum_spanning_tree",
    "minimum_spanning_tree",
    "num_components",
    "perturb_and_map",
    "sample",
]
