"""The exact expectation and gradient by enumeration, for small discrete problems.

    E_{p_theta}[f(z)] = sum_{z in support} p_theta(z) f(z),

summed over every joint value of the latent (`dist.support()`: 2**n values for n Bernoulli
units, C**n for n categorical variables). Autodiff of this sum is the exact gradient, with
respect to the distribution's parameters and to any parameters f closes over, and so are its
higher derivatives: the ground truth every Monte Carlo estimator is tested against. Not an
estimate: zero variance, no key used, `num_samples` ignored; the cost is one f evaluation per
joint value, so it is for toy problems only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ssl_gen.estimators.core import Estimator


def exact(max_configs: int = 4096) -> Estimator:
    """The exact expectation sum_z p(z) f(z) by enumeration (no bias, no variance).

    Args:
      max_configs: the largest number of joint values to enumerate; a larger latent is a
        trace-time ValueError instead of an out-of-memory crash.

    Returns:
      An `Estimator` whose value is the exact expectation (of f's output shape) and whose
      gradient is the exact gradient. Requires a discrete distribution with `support()`
      (`Bernoulli`, `Categorical`).
    """
    if not isinstance(max_configs, int) or max_configs < 1:
        raise ValueError(f"exact: max_configs must be a positive int, got {max_configs!r}")

    def estimate(f, dist, key, num_samples):
        del key, num_samples  # nothing is sampled
        if not getattr(dist, "is_discrete", False):
            raise ValueError(
                f"exact needs a discrete distribution with finite support; "
                f"{type(dist).__name__} has none"
            )
        size = math.prod(dist.batch_shape)
        base = getattr(dist, "num_classes", 2)
        if size * math.log(base) > math.log(max_configs):
            raise ValueError(
                f"exact: {type(dist).__name__} with batch shape {dist.batch_shape} has "
                f"{base}**{size} joint values, more than max_configs={max_configs}"
            )
        zs = jax.lax.stop_gradient(dist.support())  # (N, *batch_shape[, C])
        log_p = jax.vmap(dist.log_prob)(zs)  # (N, *batch_shape)
        weights = jnp.exp(jnp.sum(log_p.reshape(log_p.shape[0], -1), axis=1))  # p(z), (N,)
        fs = jax.vmap(f)(zs)  # (N, *out)
        return jnp.tensordot(weights.astype(fs.dtype), fs, axes=1)

    cost = lambda num_samples, event_size, num_classes: num_classes**event_size  # every value
    return Estimator(name="exact", estimate=estimate, unbiased=True, cost=cost)
