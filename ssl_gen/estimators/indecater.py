r"""IndeCateR: local expectations for factorized discrete latents (Bernoulli, Categorical).

For independent variables z_1..z_E (the event coordinates one output of f reads), with
theta_e acting only on z_e, the gradient sums one exact expectation per variable:

    grad E[f(z)] = sum_e E_{z_-e}[ sum_c grad p_e(c) f(z_-e, z_e = c) ],

estimated with K samples of z_-e (shared across e): every class c of every variable e is
tried against every sample. Titsias & Lazaro-Gredilla (2015), "Local Expectation Gradients
for Black Box Variational Inference"; De Smet, Sansone & Zuidberg Dos Martires (2023),
"Differentiable Sampling of Categorical Distributions Using the CatLog-Derivative Trick"
(IndeCateR). Unbiased; exact (zero variance) when f reads a single variable. f need not be
differentiable. Cost: K (E C + 1) evaluations of f (C = 2 for a Bernoulli).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ssl_gen.estimators.core import Estimator, sum_event_axes
from ssl_gen.estimators.distributions import Bernoulli, Categorical


def _classes(dist):
    """The values one variable takes, (C, *value_shape), and their probabilities (*batch, C)."""
    if isinstance(dist, Bernoulli):
        p = dist.probs
        return jnp.array([0.0, 1.0], p.dtype), jnp.stack([1.0 - p, p], axis=-1)
    return jnp.eye(dist.num_classes, dtype=jnp.result_type(dist.logits, float)), dist.probs


def indecater() -> Estimator:
    r"""IndeCateR / local-expectation gradients for `Bernoulli` and `Categorical` (unbiased).

        grad E[f] ~= sum_e sum_c grad p_e(c) mean_k f(z_k with variable e set to c),

    the sum over e running over the event variables of each output (the shape rule), all
    of them replaced in every row at once. Titsias & Lazaro-Gredilla (2015); De Smet et al.
    (2023). The value is mean_k f(z_k) (parameters f closes over get the pathwise gradient
    of that). Cost K (E C + 1) f-evaluations; requires a factorized discrete distribution.
    """

    def estimate(f, dist, key, num_samples):
        if not isinstance(dist, (Bernoulli, Categorical)):
            name = type(dist).__name__
            raise ValueError(f"indecater needs a Bernoulli or Categorical distribution, got {name}")
        zs = dist.sample(key, (num_samples,))  # (K, *batch[, C]), no gradient
        fs = jax.vmap(f)(zs)  # (K, *out)
        out_ndim = fs.ndim - 1
        batch = dist.batch_shape
        if batch[:out_ndim] != fs.shape[1:]:
            raise ValueError(
                f"f's output shape {fs.shape[1:]} must be a prefix of the sample's batch "
                f"shape {batch} (f reduces trailing event axes only)"
            )
        values, probs = _classes(dist)  # (C, *value), (*batch, C)
        value_ndim = values.ndim - 1  # 1 for one-hot classes, 0 for bits
        event_shape = batch[out_ndim:]
        num_events = math.prod(event_shape)
        masks = jnp.eye(num_events, dtype=bool).reshape((num_events,) + event_shape)
        masks = masks.reshape(masks.shape + (1,) * value_ndim)  # (E, *event[, 1])

        def f_set(z, mask, value):  # f with variable `mask` of every row set to `value`
            return f(jnp.where(mask, value, z))

        over_classes = jax.vmap(f_set, in_axes=(None, None, 0))  # -> (C, *out)
        over_events = jax.vmap(over_classes, in_axes=(None, 0, None))  # -> (E, C, *out)
        table = jax.vmap(over_events, in_axes=(0, None, None))(zs, masks, values)
        table = jnp.mean(jax.lax.stop_gradient(table), axis=0)  # (E, C, *out)
        # (E, C, *out) -> (*out, E, C) -> (*batch, C): entry (row, e, c) pairs with probs.
        table = jnp.moveaxis(table, (0, 1), (-2, -1)).reshape(batch + (values.shape[0],))
        linear = jnp.sum(table * (probs - jax.lax.stop_gradient(probs)), axis=-1)  # value 0
        return jnp.mean(fs, axis=0) + sum_event_axes(linear, out_ndim)

    cost = lambda num_samples, event_size, num_classes: num_samples * (event_size * num_classes + 1)
    return Estimator(name="indecater", estimate=estimate, unbiased=True, cost=cost)
