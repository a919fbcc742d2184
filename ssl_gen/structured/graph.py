"""Graph plumbing shared by the spanning-tree code: input checks, edge masks, components.

Conventions (stated once here, used by every function in `spanning_tree`):

- A graph on n nodes is a dense (..., n, n) array of edge values (`weights` or `theta`)
  plus an optional boolean `mask` of the same shape (or one that broadcasts to it):
  `mask[..., i, j] = True` means the edge {i, j} exists. `mask=None` is the complete graph.
  The diagonal is ignored (no self-loops). Values on missing edges are never read, so they
  may be anything (0, inf, NaN).
- Both arrays must be symmetric. Concrete (non-traced) inputs are checked eagerly and a
  violation raises a one-line `ValueError`; traced inputs (under `jit`, `vmap`, `grad`)
  cannot be checked, and the code then uses the symmetric part (w + w^T) / 2 and
  mask & mask^T.
- Every edge {i, j}, i < j, has the index i * n + j. Ties between equal values are broken
  by this index, which makes every result deterministic.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def is_concrete(*arrays) -> bool:
    """True when no argument is a tracer, i.e. the eager checks can look at the values."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def edge_index(n: int) -> np.ndarray:
    """The (n, n) int32 matrix of edge indices min(i, j) * n + max(i, j) (the tie-break order)."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return (np.minimum(i, j) * n + np.maximum(i, j)).astype(np.int32)


def check_graph(fn: str, name: str, values, mask=None) -> None:
    """Eager input checks: shape (..., n, n), finite and symmetric on the edges of the graph.

    Skipped (silently) when `values` or `mask` is traced. Raises a one-line ValueError that
    names the function, the argument, the offending entry and the fix.

    Args:
      fn: the public function's name, for the message.
      name: the argument's name (`weights` or `theta`), for the message.
      values: (..., n, n) edge values.
      mask: None, or a boolean array broadcastable to `values`' shape.
    """
    shape = jnp.shape(values)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(f"{fn}: {name} must have shape (..., n, n), got {shape}")
    if mask is not None:
        try:
            ok = np.broadcast_shapes(jnp.shape(mask), shape) == tuple(shape)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{fn}: mask of shape {jnp.shape(mask)} does not broadcast to {name}'s {shape}"
            )
    if not is_concrete(values, mask):
        return
    w = np.asarray(values)
    if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
        raise ValueError(f"{fn}: {name} must be a real array, got dtype {w.dtype}")
    n = shape[-1]
    edges = np.broadcast_to(~np.eye(n, dtype=bool), shape)
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask), shape)
        if m.dtype != bool:
            raise ValueError(f"{fn}: mask must be boolean (True = edge present), got {m.dtype}")
        if not np.array_equal(m, np.swapaxes(m, -1, -2)):
            bad = _first(m != np.swapaxes(m, -1, -2))
            raise ValueError(
                f"{fn}: mask is not symmetric: mask[{bad}] != mask[{_t(bad)}]; "
                "pass mask | mask.T (or mask & mask.T)"
            )
        edges = edges & m
    if np.issubdtype(w.dtype, np.integer):
        w = w.astype(np.float64)
    bad_nan = edges & np.isnan(w)
    if bad_nan.any():
        bad = _first(bad_nan)
        raise ValueError(
            f"{fn}: {name}[{bad}] is NaN; fix the input or drop the edge with "
            "mask[i, j] = mask[j, i] = False"
        )
    bad_inf = edges & np.isinf(w)
    if bad_inf.any():
        bad = _first(bad_inf)
        raise ValueError(
            f"{fn}: {name}[{bad}] is {w[bad]}; infinite values are not allowed — mark a "
            "missing edge with mask[i, j] = mask[j, i] = False instead"
        )
    wt = np.swapaxes(w, -1, -2)
    # Symmetric up to float rounding (e.g. A @ A.T): the code uses (w + w^T) / 2 anyway.
    asym = edges & ~np.isclose(w, wt, rtol=1e-5, atol=1e-8)
    if asym.any():
        bad = _first(asym)
        raise ValueError(
            f"{fn}: {name} is not symmetric: {name}[{bad}] = {w[bad]} but "
            f"{name}[{_t(bad)}] = {w[_t(bad)]}; pass (w + w.T) / 2"
        )


def _first(bad: np.ndarray) -> tuple:
    return tuple(int(k) for k in np.argwhere(bad)[0])


def _t(idx: tuple) -> tuple:
    return idx[:-2] + (idx[-1], idx[-2])


def symmetric_graph(values, mask=None):
    """The symmetric part of `values` and the boolean edge set, both (..., n, n).

    Args:
      values: (..., n, n) edge values.
      mask: None or boolean, broadcastable to `values`' shape.

    Returns:
      (sym, present): sym = (values + values^T) / 2 as a float array; present is True on
      the off-diagonal entries where mask & mask^T holds (all of them when mask is None).
    """
    values = jnp.asarray(values)
    if not jnp.issubdtype(values.dtype, jnp.floating):
        values = values.astype(jnp.result_type(float))
    n = values.shape[-1]
    sym = 0.5 * (values + jnp.swapaxes(values, -1, -2))
    present = jnp.broadcast_to(~jnp.eye(n, dtype=bool), values.shape)
    if mask is not None:
        mask = jnp.asarray(mask, dtype=bool)
        present = present & mask & jnp.swapaxes(mask, -1, -2)
    return sym, present


@jax.jit
def component_labels(adjacency) -> jax.Array:
    """Connected components of a graph: each node's label is the smallest node in its component.

    Min-label propagation with pointer jumping, in a `lax.while_loop` that stops when no
    label changes (at most n rounds, usually O(log n)); each round costs O(n^2). Jittable;
    batched over leading axes directly.

    Args:
      adjacency: (..., n, n) boolean symmetric adjacency (the diagonal is ignored).

    Returns:
      (..., n) int32 labels.
    """
    adjacency = jnp.asarray(adjacency, dtype=bool)
    n = adjacency.shape[-1]
    labels = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), adjacency.shape[:-1])

    def step(labels):
        # Smallest label among each node's neighbours: (..., n, n) -> (..., n).
        neighbour = jnp.min(jnp.where(adjacency, labels[..., None, :], n), axis=-1)
        labels = jnp.minimum(labels, neighbour)
        # Pointer jumping: a node's label is a node of the same component, take its label.
        return jnp.take_along_axis(labels, labels, axis=-1)

    def body(carry):
        labels, _ = carry
        new = step(labels)
        return new, jnp.any(new != labels)

    labels, _ = lax.while_loop(lambda c: c[1], body, (labels, jnp.array(True)))
    return labels


@jax.jit
def num_components(adjacency) -> jax.Array:
    """Number of connected components of a graph (isolated nodes count as components).

    For a spanning forest F on n nodes this equals n - |F|; here it works for any graph.

    Args:
      adjacency: (..., n, n) boolean symmetric adjacency.

    Returns:
      (...,) int32 counts.
    """
    labels = component_labels(adjacency)
    n = labels.shape[-1]
    return jnp.sum(labels == jnp.arange(n), axis=-1, dtype=jnp.int32)
