"""`wide_floats`: which float dtypes wider than the input's a traced program computes.

The dtype tests (tests/*/test_dtypes.py) trace a float32 problem with `jax.make_jaxpr` and
assert that no float64 appears at any depth: under `jax_enable_x64` a hard-coded default
dtype (`jnp.eye(n)`, `jnp.zeros(...)`, `jax.nn.one_hot`) would otherwise upcast silently.
"""

import jax.extend.core as jex
import jax.numpy as jnp


def _subjaxprs(value):
    if isinstance(value, jex.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jex.Jaxpr):
        yield value
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _subjaxprs(v)


def wide_floats(jaxpr, dtype) -> set:
    """The float dtypes wider than `dtype` that a (closed) jaxpr computes or captures, at any
    depth (weakly typed Python scalars, which adopt their partner's dtype, do not count)."""
    found = set()
    bits = jnp.finfo(dtype).bits

    def visit(j):
        avals = [v.aval for v in j.constvars]
        for eqn in j.eqns:
            avals += [v.aval for v in eqn.outvars]
            for p in eqn.params.values():
                for sub in _subjaxprs(p):
                    visit(sub)
        for a in avals:
            dt = getattr(a, "dtype", None)
            if dt is None or getattr(a, "weak_type", False):
                continue
            if jnp.issubdtype(dt, jnp.inexact) and jnp.finfo(dt).bits > bits:
                found.add(str(dt))

    visit(jaxpr.jaxpr)
    return found
