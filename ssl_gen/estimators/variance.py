r"""Variance tooling: how noisy, how biased and how costly each estimator is on one problem.

From R independent gradient estimates g_1..g_R (`grad_samples`, flattened to D coordinates)
and, where known, the true gradient mu (a closed form, or `exact` enumeration):

    mean        g_bar = (1/R) sum_r g_r
    variance    V = sum_d s_d^2 (the trace of the covariance; `variance_per_coordinate`
                holds each s_d^2 = (1/(R-1)) sum_r (g_rd - g_bar_d)^2)
    bias        ||g_bar - mu||, next to `bias_floor` = sqrt(V / R), the size ||g_bar - E g||
                has from sampling alone: a bias well above the floor is bias, not noise
    snr         (1/|N|) sum_{d in N} |g_bar_d| / s_d, per coordinate and averaged
                (Rainforth et al. 2018, "Tighter Variational Bounds are Not Necessarily
                Better") over the noisy coordinates N = {d: s_d > 1e-6 max_d' s_d'}: a
                coordinate that is deterministic up to float32 rounding (a dead unit's
                weights) would otherwise put an arbitrary ratio of rounding errors in the mean
    cosine      (1/R) sum_r <g_r, mu> / (||g_r|| ||mu||): how well one estimate points
    evals       forward evaluations of f per estimate (those inside derivatives of f
                included), counted by running the estimate once
    time_s      the median wall time of one jitted gradient estimate, after compilation

Everything is per estimate with that estimator's `num_samples`: compare estimators at equal
`evals` for a fair comparison. `with_and_without(estimators, control_variates, ...)` makes
the rows of each estimator alone and with each applicable control variate, one row each
(`est.control_variates`), for `compare`. Only jax and numpy: `ssl_gen.reports.estimator_report`
renders the rows as tables and plots.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.estimators.control_variates import ControlVariate, with_control_variate
from ssl_gen.estimators.core import Estimator, expectation, grad_samples
from ssl_gen.estimators.exact import exact


class EstimatorStats(NamedTuple):
    """One estimator's row (see the module docstring for the definitions)."""

    name: str
    num_samples: int
    unbiased: bool  # what the estimator claims, not what was measured
    mean: np.ndarray  # (D,)
    bias: float  # nan without a truth
    bias_floor: float
    variance: float
    variance_per_coordinate: np.ndarray  # (D,)
    snr: float
    cosine: float  # nan without a truth
    evals: int
    time_s: float


# Coordinates whose spread is below this fraction of the largest are deterministic (rounding).
SNR_NOISE_FLOOR = 1e-6


def gradient_stats(samples: Any, truth: Any = None) -> dict[str, Any]:
    """The statistics of R replicas (a pytree with a leading axis R >= 2) against `truth` (a
    pytree like one replica, or None): mean, bias, bias_floor, variance,
    variance_per_coordinate, snr, cosine (numpy, float64; coordinates in leaf order)."""
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(samples)]
    num_replicas = leaves[0].shape[0] if leaves else 0
    flat = np.concatenate([x.reshape(num_replicas, -1) for x in leaves], axis=1)  # (R, D)
    if num_replicas < 2:
        raise ValueError(f"gradient_stats needs >= 2 replicas for a variance, got {num_replicas}")
    mean = flat.mean(0)
    per_coord = flat.var(0, ddof=1)
    total = float(per_coord.sum())
    sd = np.sqrt(per_coord)
    noisy = sd > SNR_NOISE_FLOOR * sd.max()
    snr = float(np.mean(np.abs(mean[noisy]) / sd[noisy])) if noisy.any() else math.inf
    bias = cosine = math.nan
    if truth is not None:
        mu = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(truth)])
        if mu.shape != mean.shape:
            raise ValueError(f"truth has {mu.size} coordinates, the estimates {mean.size}")
        bias = float(np.linalg.norm(mean - mu))
        norms = np.linalg.norm(flat, axis=1) * np.linalg.norm(mu)
        cosine = float(np.mean(np.where(norms > 0, flat @ mu / np.where(norms > 0, norms, 1), 0)))
    return dict(mean=mean, bias=bias, bias_floor=math.sqrt(total / num_replicas),
                variance=total, variance_per_coordinate=per_coord, snr=snr, cosine=cosine)


def _scalar_objective(objective: Callable, state: Any) -> Callable:
    if state is None:
        return lambda p, k: jnp.sum(objective(p, k))
    return lambda p, k: jnp.sum(objective(p, k, state)[0])


def count_evaluations(
    f: Callable, dist_fn: Callable, estimator: Estimator, params: Any, num_samples: int,
    state: Any = None,
) -> int:
    """Forward evaluations of f in one gradient estimate, counted by a host callback that
    runs once per evaluated sample (vmap runs it per element), in one jitted call."""
    count = [0]

    def counted(z):
        jax.debug.callback(lambda _: count.__setitem__(0, count[0] + 1), z)
        return f(z)

    objective = expectation(counted, dist_fn, estimator, num_samples)
    grad = jax.jit(jax.grad(_scalar_objective(objective, state)))
    jax.block_until_ready(grad(params, jax.random.key(0)))
    jax.effects_barrier()
    return count[0]


def time_estimate(
    objective: Callable, params: Any, key: jax.Array, state: Any = None, repeats: int = 20
) -> float:
    """Median seconds of one jitted gradient estimate (fresh key each call), after a first
    call that compiles; each call is waited for, so dispatch is included (~10 us).
    `repeats=0` compiles nothing and returns nan."""
    if repeats < 1:
        return math.nan
    grad = jax.jit(jax.grad(_scalar_objective(objective, state)))
    keys = jax.random.split(key, repeats + 1)
    jax.block_until_ready(grad(params, keys[0]))
    times = []
    for k in keys[1:]:
        start = time.perf_counter()
        jax.block_until_ready(grad(params, k))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def exact_gradient(f: Callable, dist_fn: Callable, params: Any) -> Any:
    """The true gradient by enumeration (`exact`), for small discrete latents."""
    objective = expectation(f, dist_fn, exact())
    return jax.jit(jax.grad(_scalar_objective(objective, None)))(params, jax.random.key(0))


def compare(
    estimators: Mapping[str, Estimator | tuple[Estimator, int]],
    f: Callable,
    dist_fn: Callable,
    params: Any,
    key: jax.Array,
    *,
    num_samples: int = 1,
    num_replicas: int = 1000,
    truth: Any = None,
    states: Mapping[str, Any] | None = None,
    time_repeats: int = 20,
) -> list[EstimatorStats]:
    """`EstimatorStats` of each estimator on the problem E_{dist_fn(params)}[f(z)].

    Args:
      estimators: name -> an `Estimator` (with `num_samples`) or `(estimator, num_samples)`.
      f, dist_fn, params: the problem, as for `expectation`.
      key: the seed of every estimator's replicas (common random numbers across them).
      num_samples: K for estimators given without their own.
      num_replicas: R independent estimates per estimator.
      truth: the true gradient (a pytree like params), "exact" for enumeration, or None.
      states: name -> state for stateful estimators (default: `estimator.init()`).
      time_repeats: timed calls per estimator (0 skips timing: time_s is nan).

    Returns:
      One `EstimatorStats` per estimator, in the order given.
    """
    if isinstance(truth, str):
        if truth != "exact":
            raise ValueError(f"truth must be a pytree, 'exact' or None, got {truth!r}")
        truth = exact_gradient(f, dist_fn, params)
    rows = []
    for name, spec in estimators.items():
        estimator, k = (spec, num_samples) if isinstance(spec, Estimator) else spec
        state = (states or {}).get(name)
        if state is None and estimator.stateful:
            state = estimator.init()
        objective = expectation(f, dist_fn, estimator, k)
        replicas = jax.jit(lambda p, kk, o=objective, s=state: grad_samples(
            o, p, kk, num_replicas, state=s))(params, key)
        stats = gradient_stats(replicas, truth)
        seconds = time_estimate(objective, params, key, state, time_repeats)
        evals = count_evaluations(f, dist_fn, estimator, params, k, state)
        rows.append(EstimatorStats(name=name, num_samples=k, unbiased=estimator.unbiased,
                                   evals=evals, time_s=seconds, **stats))
    return rows


def with_and_without(
    estimators: Mapping[str, Estimator | tuple[Estimator, int]],
    control_variates: Mapping[str, ControlVariate | tuple[ControlVariate, float | str]],
    f: Callable | None = None,
    dist_fn: Callable | None = None,
    params: Any = None,
    *,
    num_samples: int = 1,
) -> dict[str, tuple[Estimator, int]]:
    """Each estimator alone, then with each applicable control variate: one entry (a row of
    `compare`) per pair, named "<estimator> + <control variate>".

    Args:
      estimators: name -> `Estimator` or `(Estimator, num_samples)`, as for `compare`.
      control_variates: name -> `ControlVariate` (coefficient 1) or `(cv, coefficient)`.
      f, dist_fn, params: the problem; when given, a pair that does not apply to it (the
        delta method on a discrete latent) is left out, found by tracing (nothing runs).
      num_samples: K for estimators given without their own; a pair needing more samples
        (an estimated coefficient, leave-one-out) gets its minimum.

    Returns:
      name -> (estimator, num_samples), in order: an estimator, its pairs, the next one. A
      pair that cannot be made (an estimated coefficient on a stateful estimator) is left
      out; a baseline on the pathwise or measure-valued estimator stays in and repeats the
      estimator's row (their gradient of a constant is 0), which the table then shows.
    """
    rows: dict[str, tuple[Estimator, int]] = {}
    for name, spec in estimators.items():
        estimator, k = (spec, num_samples) if isinstance(spec, Estimator) else spec
        rows[name] = (estimator, k)
        for cv_name, cv_spec in control_variates.items():
            control, coefficient = ((cv_spec, 1.0) if isinstance(cv_spec, ControlVariate)
                                    else cv_spec)
            try:
                combined = with_control_variate(estimator, control, coefficient)
            except ValueError:
                continue  # not applicable to this estimator
            k_pair = max(k, combined.min_samples)
            if f is not None and not _applies(f, dist_fn, params, combined, k_pair):
                continue
            rows[f"{name} + {cv_name}"] = (combined, k_pair)
    return rows


def _applies(f, dist_fn, params, estimator, num_samples) -> bool:
    objective = expectation(f, dist_fn, estimator, num_samples)
    state = estimator.init()
    try:
        jax.eval_shape(lambda p, k: objective(p, k, state), params, jax.random.key(0))
    except ValueError:
        return False
    return True
