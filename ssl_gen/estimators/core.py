"""The estimator contract: `expectation`, `Estimator`, `grad_samples`.

An estimator turns Monte Carlo samples into a *surrogate*: a scalar-or-array function of
the distribution's parameters whose forward value is the Monte Carlo estimate of E[f(z)] and
whose gradient (by ordinary `jax.grad`) is that estimator's gradient estimate. Nothing else
is needed to compose: the surrogate sits inside any larger loss, under `jit`/`vmap`, and
`jax.grad` flows through `dist_fn` to whatever parameters produced the distribution.

Shape rule. `f` maps one sample z (shape `batch_shape`, plus a class axis for one-hot
categoricals) to an array whose shape is a prefix of z's shape, e.g. a VAE decoder maps
z of shape (B, D) to log-likelihoods of shape (B,). The axes that f reduced are the event
axes: estimators that use log-probabilities sum them over exactly those axes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

# estimate(f, dist, key, num_samples) -> surrogate of shape f(z).shape.
EstimateFn = Callable[[Callable[[jax.Array], jax.Array], Any, jax.Array, int], jax.Array]


class Estimator(NamedTuple):
    """A gradient estimator: an immutable value made by a factory (`est.pathwise()`, ...).

    Attributes:
      name: a short name for tables and logs.
      estimate: `(f, dist, key, num_samples) -> surrogate`, see the module docstring.
      unbiased: whether the gradient estimate is unbiased for E[f(z)].
      min_samples: the fewest samples the estimator is defined for (2 for leave-one-out).
    """

    name: str
    estimate: EstimateFn
    unbiased: bool = True
    min_samples: int = 1


def check_num_samples(estimator: Estimator, num_samples: int) -> None:
    """A one-line error for a sample count the estimator cannot use."""
    if not isinstance(num_samples, int) or num_samples < estimator.min_samples:
        raise ValueError(
            f"estimator {estimator.name!r} needs num_samples >= {estimator.min_samples}, "
            f"got {num_samples!r}"
        )


def expectation(
    f: Callable[[jax.Array], jax.Array],
    dist_fn: Callable[[Any], Any],
    estimator: Estimator,
    num_samples: int = 1,
) -> Callable[[Any, jax.Array], jax.Array]:
    """The Monte Carlo objective E_{z ~ dist_fn(params)}[f(z)] with `estimator`'s gradient.

    Args:
      f: maps one sample z to an array (a prefix of z's shape); may close over parameters,
        whose gradients flow as usual (pathwise through f).
      dist_fn: maps `params` to a distribution (`est.Normal`, ...).
      estimator: an `Estimator` from a factory (`est.pathwise()`, ...).
      num_samples: Monte Carlo samples per call (K); the value is their mean.

    Returns:
      `objective(params, key)`: the Monte Carlo estimate of the expectation, of f's output
      shape. `jax.grad(lambda p, k: objective(p, k).sum())` is the estimator's gradient.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(
            f"estimator must be an ssl_gen.estimators.Estimator (e.g. est.pathwise()), "
            f"got {type(estimator).__name__}"
        )
    check_num_samples(estimator, num_samples)

    def objective(params: Any, key: jax.Array) -> jax.Array:
        return estimator.estimate(f, dist_fn(params), key, num_samples)

    return objective


def grad_samples(
    objective: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    key: jax.Array,
    num_replicas: int,
) -> Any:
    """Independent gradient estimates, stacked on a leading axis of size `num_replicas`.

    Each replica differentiates `objective(params, key_i).sum()` with its own key: the raw
    material for variance, signal-to-noise ratio, bias and cosine similarity.
    """
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    keys = jax.random.split(key, num_replicas)
    grad_fn = jax.grad(lambda p, k: jnp.sum(objective(p, k)))
    return jax.vmap(grad_fn, in_axes=(None, 0))(params, keys)


def mean_over_samples(f: Callable[[jax.Array], jax.Array], zs: jax.Array) -> jax.Array:
    """mean_k f(zs[k]) over the leading sample axis."""
    return jnp.mean(jax.vmap(f)(zs), axis=0)
