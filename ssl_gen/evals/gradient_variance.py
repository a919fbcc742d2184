r"""Gradient statistics of several estimators at one point: variance, bias, SNR, cosine.

The REBAR-style tracker (Tucker et al. 2017, Fig. 2; Grathwohl et al. 2018; Dong et al.
2020): at the current parameters and on one fixed batch, each estimator draws R independent
gradient estimates g_1..g_R of the ELBO with respect to the encoder's parameters
(`est.grad_samples`), and they are compared with a reference gradient mu (exact enumeration
when the latent is small enough, otherwise a high-sample unbiased estimate):

    mean      g_bar = (1/R) sum_r g_r
    variance  V = (1/D) sum_d s_d^2,   s_d^2 = (1/(R-1)) sum_r (g_rd - g_bar_d)^2
              (the average per-coordinate variance; `log_variance` = log V, as REBAR plots)
    bias      ||g_bar - mu||, next to its noise floor sqrt(sum_d s_d^2 / R): the size that
              ||g_bar - E g|| has from sampling alone, so bias_norm well above the floor is
              bias, not noise
    SNR       (1/|{d: s_d > 0}|) sum_{d: s_d > 0} |g_bar_d| / s_d  (Rainforth et al. 2018,
              "Tighter Variational Bounds are Not Necessarily Better", per coordinate)
    cosine    (1/R) sum_r <g_r, mu> / (||g_r|| ||mu||): how well one estimate points

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


def summarize(grads: jax.Array, truth: jax.Array) -> dict[str, jax.Array]:
    """The statistics of the module docstring from replicas (R, D) and a reference (D,)."""
    if grads.shape[0] < 2:
        raise ValueError(f"gradient statistics need >= 2 replicas, got {grads.shape[0]}")
    g_bar = jnp.mean(grads, axis=0)  # (D,)
    var = jnp.var(grads, axis=0, ddof=1)  # (D,)
    sd = jnp.sqrt(var)
    noisy = sd > 0
    snr = jnp.sum(jnp.where(noisy, jnp.abs(g_bar) / jnp.where(noisy, sd, 1.0), 0.0))
    norms = jnp.linalg.norm(grads, axis=1) * jnp.linalg.norm(truth)  # (R,)
    cosines = grads @ truth / jnp.where(norms > 0, norms, 1.0)  # (R,)
    return {
        "variance": jnp.mean(var),
        "log_variance": jnp.log(jnp.mean(var)),
        "bias_norm": jnp.linalg.norm(g_bar - truth),
        "noise_floor": jnp.sqrt(jnp.sum(var) / grads.shape[0]),
        "snr": jnp.where(jnp.any(noisy), snr / jnp.maximum(jnp.sum(noisy), 1), jnp.inf),
        "cosine": jnp.mean(cosines),
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
) -> dict[str, dict[str, jax.Array]]:
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
      name -> {variance, log_variance, bias_norm, noise_floor, snr, cosine}.
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
        def measure(p, b, k, s, truth, kwargs=kwargs):
            grads = gradient_replicas(loss_fn, p, b, k, num_replicas, path=path, state=s,
                                      **kwargs)
            return summarize(grads, truth)

        out[name] = measure(params, batch, jax.random.fold_in(key, i), state, truth)
    return out
