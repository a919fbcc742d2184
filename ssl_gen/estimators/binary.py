r"""ARM and DisARM: antithetic, unbiased estimators for Bernoulli latents.

Both draw u ~ U(0, 1)^D once per sample and evaluate f at the antithetic pair

    b = 1[u < sigmoid(alpha)],    b~ = 1[1 - u < sigmoid(alpha)]

(both are exact Bernoulli(sigmoid(alpha)) samples), here written with logistic noise
L = log u - log(1 - u): b = 1[alpha - L > 0], b~ = 1[alpha + L > 0]. With alpha the logits,

    ARM:     g_i = (f(b~) - f(b)) (u_i - 1/2),
    DisARM:  g_i = 1/2 (f(b) - f(b~)) (-1)^{b~_i} 1[b_i != b~_i] sigmoid(|alpha_i|),

ARM: Yin & Zhou (2019), "ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary
Networks". DisARM: Dong, Mnih & Tucker (2020), "DisARM: An Antithetic Gradient Estimator for
Binary Latent Variables".

Both are unbiased for grad_alpha E[f(b)]; DisARM is ARM with u integrated out given
(b, b~), so its variance is never larger. Each sample costs two evaluations of f; f need not
be differentiable in b. The value is mean_k (f(b_k) + f(b~_k)) / 2, and parameters that f
closes over get the (unbiased) pathwise gradient of that mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_gen.estimators.core import Estimator, expand_trailing, per_sample_cost, sum_event_axes
from ssl_gen.estimators.distributions import Bernoulli


def _antithetic(name, weight_fn):
    """An estimator from the per-coordinate weight w(L, b, b~, alpha) multiplying f(b) - f(b~)."""

    def estimate(f, dist, key, num_samples):
        if not isinstance(dist, Bernoulli):
            raise ValueError(f"{name} needs a Bernoulli distribution, got {type(dist).__name__}")
        alpha = dist.logits  # (*batch)
        fixed = jax.lax.stop_gradient(alpha)
        dtype = jnp.result_type(alpha, float)
        noise = jax.random.logistic(key, (num_samples,) + dist.batch_shape, dtype)  # (K, *batch)
        b, b_anti = dist.hard(fixed - noise), dist.hard(fixed + noise)
        f_b, f_anti = jax.vmap(f)(b), jax.vmap(f)(b_anti)  # (K, *out) each
        if b.shape[1 : f_b.ndim] != f_b.shape[1:]:
            raise ValueError(
                f"f's output shape {f_b.shape[1:]} must be a prefix of the sample's batch "
                f"shape {b.shape[1:]} (f reduces trailing event axes only)"
            )
        diff = expand_trailing(jax.lax.stop_gradient(f_b - f_anti), b.ndim)  # (K, *out, 1..)
        grad = jnp.mean(diff * weight_fn(noise, b, b_anti, fixed), axis=0)  # (*batch)
        linear = sum_event_axes(grad * (alpha - fixed), f_b.ndim - 1)  # value 0, grad `grad`
        return jnp.mean(0.5 * (f_b + f_anti), axis=0) + linear

    return estimate


def _arm_weight(noise, b, b_anti, alpha):
    # (f(b~) - f(b)) (u - 1/2) = (f(b) - f(b~)) (1/2 - u), u = sigmoid(L).
    return 0.5 - jax.nn.sigmoid(noise)


def _disarm_weight(noise, b, b_anti, alpha):
    sign = 1.0 - 2.0 * b_anti  # (-1)^{b~}
    return 0.5 * sign * (b != b_anti) * jax.nn.sigmoid(jnp.abs(alpha))


def arm() -> Estimator:
    """ARM (Yin & Zhou 2019) for `Bernoulli` latents: unbiased, 2 f-evaluations per sample.

    g_i = (f(b~) - f(b)) (u_i - 1/2) with the antithetic pair b = 1[u < sigmoid(alpha)],
    b~ = 1[1 - u < sigmoid(alpha)]; see the module docstring. Requires a `Bernoulli`
    distribution; f need not be differentiable. `num_samples` counts antithetic pairs.
    """
    return Estimator(name="arm", estimate=_antithetic("arm", _arm_weight), unbiased=True,
                     cost=per_sample_cost(2))


def disarm() -> Estimator:
    """DisARM (Dong, Mnih & Tucker 2020) for `Bernoulli` latents: unbiased, variance <= ARM's.

    g_i = 1/2 (f(b) - f(b~)) (-1)^{b~_i} 1[b_i != b~_i] sigmoid(|alpha_i|): ARM's estimate
    with u integrated out given the pair (Rao-Blackwellized). Requires a `Bernoulli`
    distribution; f need not be differentiable. `num_samples` counts antithetic pairs.
    """
    return Estimator(name="disarm", estimate=_antithetic("disarm", _disarm_weight), unbiased=True,
                     cost=per_sample_cost(2))
