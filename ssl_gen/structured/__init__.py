"""Combinatorial latents for structured estimators: spanning trees.

`ssl_gen.structured.spanning_tree` is the public module (MST, enumeration, the Gibbs
distribution over spanning trees, exact sampling, perturb-and-MAP); see its docstring.
This package imports only jax and numpy.
"""

from ssl_gen.structured import spanning_tree

__all__ = ["spanning_tree"]
