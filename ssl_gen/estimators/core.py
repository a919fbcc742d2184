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

State (optax's protocol, uniform). Every estimator has `estimator.init() -> state`, a
NamedTuple: `EmptyState()` (no leaves) for a stateless one. A stateful estimator
(`estimator.stateful`: its state has leaves, e.g. a moving-average baseline or RELAX's
network) takes the state as a fifth argument of `estimate` and returns
`(surrogate, new_state)`; `expectation` then returns `objective(params, key, state) ->
(value, new_state)`. Every objective accepts that call, so one signature serves every
estimator: a stateless one returns its `EmptyState` unchanged (and still accepts
`objective(params, key) -> value`). The caller threads the state.

Cost. `estimator.cost(num_samples, event_size, num_classes)` is the number of forward
evaluations of f in one estimate (those inside derivatives of f included) for f with one
output row that reads `event_size` latent variables of `num_classes` classes each (2 for a
Bernoulli; ignored for a Normal); `estimator.evaluations(...)` calls it with defaults.
Comparisons at equal cost read it from here (`objectives.estimator_config.function_evaluations`,
`est.variance`), and tests/estimators/test_cost.py keeps it equal to the counted calls.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

# estimate(f, dist, key, num_samples) -> surrogate of shape f(z).shape; a stateful
# estimator's takes a fifth argument, its state, and returns (surrogate, new_state).
EstimateFn = Callable[..., Any]


class EmptyState(NamedTuple):
    """The state of a stateless estimator or control variate: no leaves (optax's
    `EmptyState`)."""


def empty_init() -> EmptyState:
    """`init` of everything stateless."""
    return EmptyState()


# Cost(num_samples, event_size, num_classes) -> forward f-evaluations in one estimate.
CostFn = Callable[[int, int, int], int]


def per_sample_cost(evaluations: int) -> CostFn:
    """The cost of an estimator that evaluates f `evaluations` times per sample."""
    return lambda num_samples, event_size, num_classes: evaluations * num_samples


@functools.lru_cache(maxsize=1024)
def _has_state(init: Callable[[], Any]) -> bool:
    return bool(jax.tree.leaves(jax.eval_shape(init)))


class Estimator(NamedTuple):
    """A gradient estimator: an immutable value made by a factory (`est.pathwise()`, ...).

    Attributes:
      name: a short name for tables and logs.
      estimate: `(f, dist, key, num_samples) -> surrogate`, see the module docstring.
      unbiased: whether the gradient estimate is unbiased for E[f(z)].
      min_samples: the fewest samples the estimator is defined for (2 for leave-one-out).
      init: `init() -> state`, a NamedTuple of arrays (`EmptyState()` when stateless). A
        stateful estimator's `estimate` takes the state last and returns
        `(surrogate, new_state)`.
      cost: `(num_samples, event_size, num_classes) -> int`, the forward f-evaluations of
        one estimate (module docstring); None when unknown (a hand-made estimator).
      per_sample: None, or `(f, dist, key, num_samples) -> (K, *out)`: the K per-sample
        surrogates whose mean over the first axis is `estimate`'s, from the same draws.
        Control variates with a per-sample coefficient use it (one batched call of f on
        `estimate`'s own samples); without it they run K single-sample estimates.
    """

    name: str
    estimate: EstimateFn
    unbiased: bool = True
    min_samples: int = 1
    init: Callable[[], Any] = empty_init
    cost: CostFn | None = None
    per_sample: EstimateFn | None = None

    @property
    def stateful(self) -> bool:
        """Whether `init()` has leaves (then `estimate` takes and returns the state)."""
        return self.init is not None and self.init is not empty_init and _has_state(self.init)

    def evaluations(self, num_samples: int, event_size: int = 1, num_classes: int = 2) -> int:
        """Forward evaluations of f in one estimate (see `cost`); a one-line ValueError when
        the estimator does not state its cost."""
        if self.cost is None:
            raise ValueError(
                f"no function-evaluation count for estimator {self.name!r}; give its "
                "Estimator a cost= (ssl_gen/estimators/core.py) so comparisons stay fair")
        return int(self.cost(num_samples, event_size, num_classes))


def check_num_samples(estimator: Estimator, num_samples: int) -> None:
    """A one-line error for a sample count the estimator cannot use: not an int (2.0, True,
    an array), or fewer than `estimator.min_samples`."""
    if not is_count(num_samples):
        raise ValueError(
            f"estimator {estimator.name!r}: num_samples must be an int, got {num_samples!r} "
            f"({type(num_samples).__name__})"
        )
    if num_samples < estimator.min_samples:
        raise ValueError(
            f"estimator {estimator.name!r} needs num_samples >= {estimator.min_samples}, "
            f"got {num_samples!r}"
        )


def is_count(value: Any) -> bool:
    """Whether `value` is a Python or numpy integer (bool excluded): a usable sample count."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


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
      `objective(params, key, state)` returns `(value, new_state)` for every estimator, with
      `state = estimator.init()` at the start; a stateful estimator (`estimator.stateful`)
      requires it, a stateless one returns its empty state unchanged.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(
            f"estimator must be an ssl_gen.estimators.Estimator (e.g. est.pathwise()), "
            f"got {type(estimator).__name__}"
        )
    check_num_samples(estimator, num_samples)

    if estimator.stateful:

        def stateful_objective(params: Any, key: jax.Array, state: Any = None) -> Any:
            if state is None:
                raise ValueError(
                    f"estimator {estimator.name!r} is stateful: call objective(params, key, "
                    "state) with state = estimator.init(), and thread the returned state"
                )
            return estimator.estimate(f, dist_fn(params), key, num_samples, state)

        return stateful_objective

    def objective(params: Any, key: jax.Array, state: Any = None) -> Any:
        value = estimator.estimate(f, dist_fn(params), key, num_samples)
        return value if state is None else (value, state)  # the uniform (value, state) call

    return objective


def grad_samples(
    objective: Callable[..., Any],
    params: Any,
    key: jax.Array,
    num_replicas: int,
    state: Any = None,
) -> Any:
    """Independent gradient estimates, stacked on a leading axis of size `num_replicas`.

    Each replica differentiates `objective(params, key_i).sum()` with its own key: the raw
    material for variance, signal-to-noise ratio, bias and cosine similarity. For a
    stateful estimator's objective pass `state`: every replica starts from it (so the
    replicas stay independent) and the new states are discarded.
    """
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    keys = jax.random.split(key, num_replicas)
    if state is None:
        value_fn = lambda p, k: jnp.sum(objective(p, k))
    else:
        value_fn = lambda p, k: jnp.sum(objective(p, k, state)[0])
    return jax.vmap(jax.grad(value_fn), in_axes=(None, 0))(params, keys)


def mean_over_samples(f: Callable[[jax.Array], jax.Array], zs: jax.Array) -> jax.Array:
    """mean_k f(zs[k]) over the leading sample axis."""
    return jnp.mean(jax.vmap(f)(zs), axis=0)


def event_log_prob(dist: Any, zs: jax.Array, fs: jax.Array) -> jax.Array:
    """log p(z_k) summed over the event axes that f reduced: shape (K, *out) like `fs`.

    Args:
      dist: the distribution the samples came from.
      zs: samples with a leading sample axis, (K, *batch_shape[, C]).
      fs: f of each sample, (K, *out), `out` a prefix of `batch_shape`.
    """
    log_p = jax.vmap(dist.log_prob)(zs)  # (K, *batch_shape)
    if log_p.shape[: fs.ndim] != fs.shape:
        raise ValueError(
            f"f's output shape {fs.shape[1:]} must be a prefix of the sample's batch shape "
            f"{log_p.shape[1:]} (f reduces trailing event axes only)"
        )
    return jnp.sum(log_p, axis=tuple(range(fs.ndim, log_p.ndim)))


def expand_trailing(x: jax.Array, ndim: int) -> jax.Array:
    """x with trailing singleton axes up to `ndim`: f's (K, *out) against (K, *batch)."""
    return jnp.reshape(x, jnp.shape(x) + (1,) * (ndim - jnp.ndim(x)))


def sum_event_axes(x: jax.Array, out_ndim: int) -> jax.Array:
    """Sum every axis of x after the first `out_ndim` (f's output axes)."""
    return jnp.sum(x, axis=tuple(range(out_ndim, jnp.ndim(x))))


def magic_box(x: jax.Array) -> jax.Array:
    """The DiCE operator exp(x - stop_gradient(x)): value 1, gradient x' * magic_box(x).

    Foerster et al. (2018), "DiCE: The Infinitely Differentiable Monte Carlo Estimator".
    """
    return jnp.exp(x - jax.lax.stop_gradient(x))
