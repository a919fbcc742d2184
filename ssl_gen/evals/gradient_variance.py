r"""Gradient statistics of several estimators at one point: variance, bias, SNR, cosine.

The REBAR-style tracker (Tucker et al. 2017, Fig. 2; Grathwohl et al. 2018; Dong et al.
2020): at the current parameters and on one fixed batch, each estimator draws R independent
gradient estimates g_1..g_R of the ELBO with respect to the encoder's parameters
(`est.grad_samples`), and they are compared with a reference gradient mu (exact enumeration
when the latent is small enough, otherwise a high-sample unbiased estimate). The statistics
are those of `est.variance.gradient_stats` (one definition in the codebase): bias ||g_bar -
mu|| next to its noise floor sqrt(V / R), the variance V = sum_d s_d^2 (the covariance's
trace), the per-coordinate SNR (Rainforth et al. 2018) and the mean cosine to mu; plus
`log_variance` = log((1/D) sum_d s_d^2), the mean per-parameter variance REBAR plots
(tensorflow/models research/rebar: `reduce_mean` of the per-parameter variances).

`gradient_statistics` is a pure function of (params, batch, key): the caller (an eval, a
notebook, the comparison sweep) chooses when to call it. Stateful estimators are measured
from the state given in `states` (their initial state otherwise: a moving average of 0 is
plain REINFORCE, an untrained RELAX is REBAR).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen import estimators as est

# (params, batch, rng, **objective kwargs) -> (loss, aux); loss = -ELBO (discrete_elbo.loss_fn).
LossFn = Callable[..., tuple[jax.Array, dict]]


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _replace(tree: Mapping, path: tuple[str, ...], value: Any) -> dict:
    """A copy of nested dicts `tree` with the subtree at `path` replaced by `value`."""
    if not path:
        return value
    return {**tree, path[0]: _replace(tree[path[0]], path[1:], value)}


def gradient_replicas(loss_fn: LossFn, params: Any, batch: Mapping[str, jax.Array],
                      key: jax.Array, num_replicas: int, *, path: tuple[str, ...] = (
                          "params", "encoder"), state: Any = None, **objective: Any) -> jax.Array:
    """R independent estimates of grad_{params at path} ELBO, flattened: (R, D).

    Args:
      loss_fn: the objective, `(params, batch, rng, **objective) -> (-ELBO, aux)`.
      params: all model variables; only the subtree at `path` is differentiated.
      batch: the fixed batch. key: split into R replica keys (`est.grad_samples`).
      num_replicas: R. state: a stateful estimator's state (every replica starts from it).
      **objective: the objective's kwargs (estimator, num_samples, ...).

    Returns:
      (R, D): the leaves of the subtree, in `jax.tree.leaves` order, concatenated.
    """
    def elbo(sub, k):
        kwargs = dict(objective, estimator_state=state) if state is not None else objective
        return -loss_fn(_replace(params, path, sub), batch, k, **kwargs)[0]

    grads = est.grad_samples(elbo, _get(params, path), key, num_replicas)
    return jnp.concatenate([g.reshape(num_replicas, -1) for g in jax.tree.leaves(grads)], 1)


def summarize(grads: Any, truth: Any) -> dict[str, float]:
    """The tracker's statistics from replicas (R, D) and a reference (D,), as floats."""
    stats = est.variance.gradient_stats(grads, truth)
    mean_variance = float(np.mean(stats["variance_per_coordinate"]))
    return {
        "log_variance": float(np.log(mean_variance)) if mean_variance > 0 else -np.inf,
        "variance": stats["variance"],
        "bias": stats["bias"],
        "bias_floor": stats["bias_floor"],
        "snr": stats["snr"],
        "cosine": stats["cosine"],
    }


def gradient_statistics(
    loss_fn: LossFn,
    params: Any,
    batch: Mapping[str, jax.Array],
    key: jax.Array,
    *,
    estimators: Mapping[str, Mapping[str, Any]],
    reference: Mapping[str, Any],
    num_replicas: int = 100,
    path: tuple[str, ...] = ("params", "encoder"),
    states: Mapping[str, Any] | None = None,
    init_state: Callable[..., Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Variance, bias, SNR and cosine of each estimator's gradient at `params` on `batch`.

    Args:
      loss_fn: the objective with its model bound (`functools.partial(discrete_elbo.loss_fn,
        model=m)`), returning (-ELBO, aux).
      params, batch: the point and the fixed batch every estimator is measured on.
      key: one key: the reference and each estimator get their own (`fold_in` by index).
      estimators: name -> the objective's kwargs for that estimator (estimator, num_samples,
        temperature_schedule, ...), e.g. the presets of experiments/dvae_estimators.py.
      reference: the objective's kwargs for the reference gradient, one replica of it:
        `{"estimator": "exact"}`, or a high-sample unbiased estimator.
      num_replicas: R >= 2 per estimator.
      path: the parameter subtree whose gradient is measured (the encoder's).
      states: name -> state for stateful estimators; `init_state(**kwargs)` (e.g.
        `functools.partial(discrete_elbo.init_estimator_state, model=m)`) gives the others.

    Returns:
      name -> {log_variance, variance, bias, bias_floor, snr, cosine} (floats).
    """
    states = dict(states or {})
    # One compilation per estimator and call (the kwargs are static, closed over).
    truth = jax.jit(lambda p, b, k: gradient_replicas(loss_fn, p, b, k, 1, path=path,
                                                      **reference)[0])(
        params, batch, jax.random.fold_in(key, 0))
    out = {}
    for i, (name, kwargs) in enumerate(estimators.items(), start=1):
        state = states.get(name)
        if state is None and init_state is not None:
            state = init_state(**kwargs)

        @jax.jit
        def replicas(p, b, k, s, kwargs=kwargs):
            return gradient_replicas(loss_fn, p, b, k, num_replicas, path=path, state=s,
                                     **kwargs)

        grads = replicas(params, batch, jax.random.fold_in(key, i), state)
        out[name] = summarize(np.asarray(grads), np.asarray(truth))
    return out
