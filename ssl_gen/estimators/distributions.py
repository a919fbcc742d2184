"""Distributions for the estimators: small immutable pytrees with the math in one place.

A distribution is a NamedTuple of arrays (so it is a pytree: it flows through `jax.jit`,
`jax.vmap` and `jax.grad`, and an estimator differentiates with respect to its fields).

Shapes. `batch_shape` is the broadcast shape of the parameters. `sample(key, shape)` returns
an array of shape `shape + batch_shape` (one-hot categoricals add the class axis).
`log_prob(z)` is elementwise over the batch shape (no axis is summed): an estimator sums
the trailing axes that the function f reduced (see `ssl_gen.estimators.core`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Normal(NamedTuple):
    """Diagonal Gaussian N(loc, scale^2), elementwise.

    Reparameterizable: z = loc + scale * eps, eps ~ N(0, 1) (Kingma & Welling 2014).
    """

    loc: jax.Array
    scale: jax.Array

    has_rsample = True  # a class constant, not a pytree field

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.scale))

    def noise(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """Standard normal noise eps of shape `shape + batch_shape`."""
        dtype = jnp.result_type(self.loc, self.scale, float)
        return jax.random.normal(key, tuple(shape) + self.batch_shape, dtype)

    def rsample(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """A reparameterized sample loc + scale * eps: differentiable in loc and scale."""
        return self.loc + self.scale * self.noise(key, shape)

    def sample(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """A sample with no gradient path to the parameters."""
        return jax.lax.stop_gradient(self.rsample(key, shape))

    def log_prob(self, z: jax.Array) -> jax.Array:
        """log N(z; loc, scale^2), elementwise."""
        u = (z - self.loc) / self.scale
        return -0.5 * jnp.square(u) - jnp.log(self.scale) - _HALF_LOG_2PI

    def entropy(self) -> jax.Array:
        """0.5 log(2 pi e scale^2), elementwise."""
        return jnp.broadcast_to(0.5 + _HALF_LOG_2PI + jnp.log(self.scale), self.batch_shape)

    def mean(self) -> jax.Array:
        return jnp.broadcast_to(self.loc, self.batch_shape)

    def kl(self, other: Normal) -> jax.Array:
        """KL(self || other) in closed form, elementwise:
        log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2."""
        var_ratio = jnp.square(self.scale / other.scale)
        t = jnp.square((self.loc - other.loc) / other.scale)
        return 0.5 * (var_ratio + t - 1.0 - jnp.log(var_ratio))


def standard_normal_like(dist: Normal) -> Normal:
    """N(0, 1) with the batch shape of `dist` (the usual VAE prior)."""
    zeros = jnp.zeros(dist.batch_shape, jnp.result_type(dist.loc, float))
    return Normal(zeros, jnp.ones_like(zeros))
