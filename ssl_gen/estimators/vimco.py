r"""The multi-sample (importance-weighted) bound and its VIMCO gradient.

For a latent-variable model p(x, z) and a proposal q_phi(z) (an encoder's distribution), the
importance-weighted bound of Burda, Grosse & Salakhutdinov (2016), "Importance Weighted
Autoencoders", is

    L_K = E_{z_1..K ~ q} [ L^ ],   L^ = log (1/K) sum_k w_k,   log w_k = log p(x, z_k) - log q(z_k),

a lower bound on log p(x) that tightens as K grows (K = 1 is the ELBO). With the samples drawn
from q (so no pathwise gradient through z, as for discrete latents),

    grad L_K = E[ sum_k L^ grad log q(z_k) + sum_k w~_k grad log w_k ],   w~_k = w_k / sum_j w_j.

The second term is autodiff through log w at fixed z (the decoder's parameters and the
direct -log q term). The first gives every sample the same learning signal L^: unbiased but
noisy, and its variance grows with the scale of L^. VIMCO (Mnih & Rezende 2016, "Variational
inference for Monte Carlo objectives", Eq. 9-10) subtracts from sample k's signal a baseline
that does not depend on z_k: the bound with w_k replaced by the geometric mean of the others,

    L_{-k} = log (1/K) ( sum_{j != k} w_j + exp( mean_{j != k} log w_j ) ),

so the estimate sum_k (L^ - L_{-k}) grad log q(z_k) + sum_k w~_k grad log w_k stays
unbiased (E[grad log q(z_k) | z_{-k}] = 0) and the signal L^ - L_{-k} measures how much
sample k contributes to the bound. Everything is computed in log space (logsumexp), so
log weights far outside float range (exp overflow) are fine.

The surrogate L^ + sum_k sg(signal_k) (log q(z_k) - sg(log q(z_k))) has value exactly L^
and the gradient above (sg = `jax.lax.stop_gradient`). First derivatives only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ssl_gen.estimators.core import event_log_prob, is_count

ESTIMATORS = ("vimco", "score_function")


def leave_one_out_bounds(log_w: jax.Array) -> jax.Array:
    """L_{-k} = log (1/K) (sum_{j != k} w_j + exp(mean_{j != k} log w_j)) for every k.

    Args:
      log_w: log weights with a leading sample axis, (K, *out), K >= 2.

    Returns:
      (K, *out). Row k is the logsumexp of log_w with entry k replaced by the mean of the
      others (a (K, K, *out) intermediate: no subtraction of w_k, so no cancellation).
    """
    k = log_w.shape[0]
    eye = jnp.eye(k, dtype=bool).reshape((k, k) + (1,) * (log_w.ndim - 1))
    others = jnp.where(eye, jnp.zeros((), log_w.dtype), log_w[None])  # (K, K, *out)
    geometric = jnp.sum(others, axis=1) / (k - 1)  # mean_{j != k} log w_j, (K, *out)
    replaced = jnp.where(eye, geometric[:, None], log_w[None])
    return jax.nn.logsumexp(replaced, axis=1) - math.log(k)


def multi_sample_bound(
    log_joint: Callable[[jax.Array], jax.Array],
    dist_fn: Callable[[Any], Any],
    num_samples: int,
    *,
    estimator: str = "vimco",
) -> Callable[[Any, jax.Array], jax.Array]:
    r"""The K-sample bound L_K = E[log (1/K) sum_k p(x, z_k) / q(z_k)], as a `jax.grad` transform.

    Args:
      log_joint: maps one sample z (`batch_shape`, plus a class axis for one-hot
        categoricals) to log p(x, z), an array whose shape is a prefix of the batch shape
        (like f in `est.expectation`: the reduced axes are the event axes, over which log q
        is summed). It may close over parameters (a decoder): their gradient is pathwise,
        sum_k w~_k grad log p(x, z_k).
      dist_fn: maps `params` to the proposal q, a distribution with `sample` and `log_prob`
        (`est.Bernoulli`, `est.Categorical`; any, since z is never differentiated).
      num_samples: K, the number of independent samples z_k ~ q per call.
      estimator: the gradient of the encoder's parameters (both unbiased):
        - "vimco": the learning signal L^ - L_{-k} with the geometric-mean leave-one-out
          baseline (Mnih & Rezende 2016). Needs num_samples >= 2.
        - "score_function": the signal L^ for every sample, no baseline (REINFORCE on the
          bound; noisy, for comparison). K = 1 is the ELBO with the plain score function.

    Returns:
      `objective(params, key)`: L^ = logsumexp_k(log w_k) - log K, of log_joint's output
      shape; `jax.grad(lambda p, k: objective(p, k).sum())` is the estimator's gradient. Works
      under `jax.jit`, `jax.vmap` over keys and `est.grad_samples`.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"multi_sample_bound: unknown estimator {estimator!r}; choose from {ESTIMATORS}"
        )
    minimum = 2 if estimator == "vimco" else 1
    if not is_count(num_samples):
        raise ValueError(
            f"multi_sample_bound(estimator={estimator!r}): num_samples must be an int, got "
            f"{num_samples!r} ({type(num_samples).__name__})"
        )
    if num_samples < minimum:
        raise ValueError(
            f"multi_sample_bound(estimator={estimator!r}) needs num_samples >= {minimum}, "
            f"got {num_samples!r}"
        )
    log_k = math.log(num_samples)
    sg = jax.lax.stop_gradient

    def objective(params: Any, key: jax.Array) -> jax.Array:
        dist = dist_fn(params)
        zs = sg(dist.sample(key, (num_samples,)))  # (K, *batch[, C])
        log_joints = jax.vmap(log_joint)(zs)  # (K, *out)
        log_q = event_log_prob(dist, zs, log_joints)  # (K, *out)
        log_w = log_joints - log_q
        bound = jax.nn.logsumexp(log_w, axis=0) - log_k  # grad: sum_k w~_k grad log w_k
        fixed = sg(log_w)
        signal = sg(bound)[None]  # "score_function": L^ for every sample
        if estimator == "vimco":
            signal = signal - leave_one_out_bounds(fixed)
        signal = sg(jnp.broadcast_to(signal, log_q.shape))
        return bound + jnp.sum(signal * (log_q - sg(log_q)), axis=0)

    return objective
