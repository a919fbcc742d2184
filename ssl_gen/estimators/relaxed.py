r"""Relaxed and straight-through estimators for discrete latents (Bernoulli, Categorical).

All three perturb the logits with the noise whose argmax is an exact sample (Gumbel-Max:
z = onehot(argmax(logits + G)), G ~ Gumbel(0, 1); for a Bernoulli, z = 1[logits + L > 0],
L ~ Logistic(0, 1)) and differ in what they differentiate:

- `gumbel_softmax`: f at the relaxed sample softmax((logits + G) / tau) (the Concrete
  distribution), differentiated pathwise. Biased (f is evaluated off the discrete support);
  the bias vanishes as tau -> 0 while the variance grows.
- `straight_through`: f at the exact sample, gradient as if z were its mean E[z] = softmax
  (logits). Biased unless f is linear.
- `straight_through_gumbel`: f at the exact sample, gradient of the relaxed sample.
  Biased.
- `reinmax`: f at the exact sample, a second-order (Heun) combination of straight-through
  Jacobians. Biased in general; unbiased for f quadratic in each variable at tau = 1.
- `gumbel_rao`: f at the exact sample, the straight-through Gumbel gradient averaged over
  M noises drawn given that sample: ST-Gumbel's mean, lower variance.
- `gapped_straight_through`: f at the exact sample, the Gumbel-Softmax gradient at a
  deterministic perturbation of the logits that makes the sample their argmax by a gap.

Requirements: f must accept relaxed values (points of the simplex / the unit interval),
and be differentiable in z; the distribution must be discrete (`is_discrete`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ssl_gen.estimators.core import Estimator, mean_over_samples, per_sample_cost
from ssl_gen.estimators.distributions import Bernoulli, Categorical

ONE = per_sample_cost(1)  # f at one (exact or relaxed) point per sample


def check_temperature(name: str, temperature) -> float:
    """A positive, finite temperature, or a one-line ValueError (traced values pass)."""
    if isinstance(temperature, jax.core.Tracer):
        return temperature  # annealed inside jit: it cannot be checked here
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: temperature must be a number, got {temperature!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}: temperature must be > 0 and finite, got {temperature!r}")
    return temperature


def _check_discrete(name: str, dist) -> None:
    if not getattr(dist, "is_discrete", False):
        raise ValueError(
            f"{name} needs a discrete distribution (Bernoulli, Categorical); "
            f"{type(dist).__name__} is not one (use pathwise for a Normal)"
        )


def gumbel_softmax(temperature: float = 1.0) -> Estimator:
    r"""The Gumbel-Softmax / Concrete estimator (relaxed, pathwise; biased).

    E[f(z)] ~= mean_k f(y_k),  y_k = softmax((logits + G_k) / tau),  G_k ~ Gumbel(0, 1)
    (for a Bernoulli, y_k = sigmoid((logits + L_k) / tau), L_k ~ Logistic(0, 1)), and the
    gradient is the pathwise gradient of that. Jang, Gu & Poole (2017), "Categorical
    Reparameterization with Gumbel-Softmax"; Maddison, Mnih & Teh (2017), "The Concrete
    Distribution". The value and the gradient are those of the relaxed objective
    E[f(y)], not of E[f(z)]: biased, with bias -> 0 as tau -> 0 (and variance -> infinity).

    Args:
      temperature: tau > 0 (a one-line ValueError otherwise).
    """
    temperature = check_temperature("gumbel_softmax", temperature)

    def estimate(f, dist, key, num_samples):
        _check_discrete("gumbel_softmax", dist)
        perturbed = dist.perturb(key, (num_samples,))  # differentiable in the logits
        return mean_over_samples(f, dist.soft(perturbed, temperature))

    return Estimator(name=f"gumbel_softmax[{temperature}]", estimate=estimate, unbiased=False,
                     cost=ONE)


def straight_through() -> Estimator:
    r"""The plain straight-through estimator (biased).

    Forward: f at exact samples z_k. Backward: as if z_k = E[z] (softmax(logits) or
    sigmoid(logits)): the surrogate is f(z_k + mu - stop_gradient(mu)), so the gradient is
    mean_k grad_z f(z_k) . d mu / d logits. Bengio, Leonard & Courville (2013), "Estimating
    or Propagating Gradients Through Stochastic Neurons". The value is an unbiased MC
    estimate of E[f(z)]; the gradient is biased (exact when f is linear in z).
    """

    def estimate(f, dist, key, num_samples):
        _check_discrete("straight_through", dist)
        zs = dist.sample(key, (num_samples,))  # (K, *batch[, C]), no gradient
        mu = dist.mean()
        return mean_over_samples(f, zs + (mu - jax.lax.stop_gradient(mu)))  # value: f(z_k)

    return Estimator(name="straight_through", estimate=estimate, unbiased=False, cost=ONE)


def straight_through_gumbel(temperature: float = 1.0) -> Estimator:
    r"""Straight-through Gumbel-Softmax (biased).

    Forward: f at the exact Gumbel-Max sample z_k = hard(logits + G_k). Backward: the
    Gumbel-Softmax gradient of y_k = softmax((logits + G_k) / tau) with the same noise: the
    surrogate is f(z_k + y_k - stop_gradient(y_k)). Jang et al. (2017). The value
    is an unbiased MC estimate of E[f(z)]; the gradient is biased for every tau.

    Args:
      temperature: tau > 0 of the backward relaxation (a one-line ValueError otherwise).
    """
    temperature = check_temperature("straight_through_gumbel", temperature)

    def estimate(f, dist, key, num_samples):
        _check_discrete("straight_through_gumbel", dist)
        perturbed = dist.perturb(key, (num_samples,))
        soft = dist.soft(perturbed, temperature)
        hard = dist.hard(perturbed)
        return mean_over_samples(f, hard + (soft - jax.lax.stop_gradient(soft)))

    name = f"straight_through_gumbel[{temperature}]"
    return Estimator(name=name, estimate=estimate, unbiased=False, cost=ONE)


def _probs_with_jacobian_at(dist, probs):
    """Value `probs`, gradient w.r.t. the logits that of the link (softmax or sigmoid) at
    `probs`: link(stop_gradient(link^-1(probs) - logits) + logits)."""
    if isinstance(dist, Bernoulli):
        logits_of = jnp.log(probs) - jnp.log1p(-probs)
    else:
        logits_of = jnp.log(probs)  # softmax(log p) = p
    shift = jax.lax.stop_gradient(logits_of - dist.logits)
    return dist.soft(shift + dist.logits, 1.0)


def reinmax(temperature: float = 1.0) -> Estimator:
    r"""ReinMax (Liu et al. 2023, "Bridging Discrete and Backpropagation: Straight-Through and
    Beyond"): straight-through with second-order accuracy (biased in general).

    Forward: f at exact samples D_k. Backward: with pi0 = softmax(logits) and
    pi1 = (D + softmax(logits / tau)) / 2, the surrogate is f(D + pi2 - stop_gradient(pi2)),
    pi2 = 2 pi1 - pi0 / 2, where pi1 carries the softmax Jacobian at its own value, so

        grad_logits = (2 J(pi1) - J(pi0) / 2)^T grad_z f(D),   J(p) = diag(p) - p p^T.

    This is Heun's method for the integral behind f(D) - f(D'): the trapezoid rule, exact when
    f is quadratic in each categorical variable, so at tau = 1 the estimator is unbiased for
    such f (plain straight-through, Euler's method, is not). For a Bernoulli the same holds
    with the sigmoid. The value is an unbiased MC estimate of E[f(z)].

    Args:
      temperature: tau >= 1, the range the method is defined for (the authors' code refuses
        tau < 1); anything else is a one-line ValueError.
    """
    temperature = check_temperature("reinmax", temperature)
    if not isinstance(temperature, jax.core.Tracer) and float(temperature) < 1.0:
        raise ValueError(f"reinmax: temperature must be >= 1 (Liu et al. 2023), got {temperature}")

    def estimate(f, dist, key, num_samples):
        _check_discrete("reinmax", dist)
        if not isinstance(dist, (Bernoulli, Categorical)):
            raise ValueError("reinmax needs a Bernoulli or Categorical distribution (a softmax "
                             f"or sigmoid of independent logits), got {type(dist).__name__}")
        hard = dist.sample(key, (num_samples,))  # (K, *batch[, C]), no gradient
        pi0 = dist.mean()
        pi1 = _probs_with_jacobian_at(dist, 0.5 * (hard + dist.soft(dist.logits, temperature)))
        pi2 = 2.0 * pi1 - 0.5 * pi0
        return mean_over_samples(f, hard + (pi2 - jax.lax.stop_gradient(pi2)))

    return Estimator(name=f"reinmax[{temperature}]", estimate=estimate, unbiased=False, cost=ONE)


def _check_conditional(name: str, dist) -> None:
    _check_discrete(name, dist)
    if not hasattr(dist, "conditional_perturb"):
        raise ValueError(f"{name} needs conditional_perturb; {type(dist).__name__} has none")


def gumbel_rao(temperature: float = 1.0, num_rao_samples: int = 10) -> Estimator:
    r"""Gumbel-Rao: Rao-Blackwellized straight-through Gumbel-Softmax (biased; ST-GS's mean).

    Forward: f at the exact sample D_k. Backward: ST-Gumbel's gradient, whose noise is
    replaced by its conditional expectation given D_k, estimated with M draws:

        grad ~= (1/M) sum_m J_m^T grad_z f(D_k),  J_m = d softmax((logits + G_m) / tau) / d logits,
        G_m ~ Gumbel(0, 1) given argmax(logits + G_m) = D_k   (`conditional_perturb`).

    Since f(D) depends on the noise only through D, E[ST-GS gradient | D] is exactly this
    average at M -> infinity: by the tower property the mean equals straight-through
    Gumbel's at the same tau (the same bias), and by Rao-Blackwell the variance is never
    larger (M = 1 is ST-GS in distribution). Paulus, Maddison & Krause (2021),
    "Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient Estimator". The value
    is an unbiased MC estimate of E[f(z)]. Cost: K f-evaluations, K M softmaxes.

    Args:
      temperature: tau > 0 of the backward relaxation (a one-line ValueError otherwise).
      num_rao_samples: M >= 1 conditional noises per sample.
    """
    temperature = check_temperature("gumbel_rao", temperature)
    if not isinstance(num_rao_samples, int) or num_rao_samples < 1:
        got = repr(num_rao_samples)
        raise ValueError(f"gumbel_rao: num_rao_samples must be an int >= 1, got {got}")

    def estimate(f, dist, key, num_samples):
        _check_conditional("gumbel_rao", dist)
        key_hard, key_noise = jax.random.split(key)
        hard = dist.sample(key_hard, (num_samples,))  # (K, *batch[, C]), no gradient
        fixed = jax.lax.stop_gradient(dist)
        repeated = jnp.broadcast_to(hard, (num_rao_samples,) + hard.shape)  # (M, K, ...)
        noise = fixed.conditional_perturb(key_noise, repeated) - fixed.logits  # no gradient
        soft = jnp.mean(dist.soft(dist.logits + noise, temperature), axis=0)  # (K, ...)
        return mean_over_samples(f, hard + (soft - jax.lax.stop_gradient(soft)))

    name = f"gumbel_rao[{temperature},{num_rao_samples}]"
    return Estimator(name=name, estimate=estimate, unbiased=False, cost=ONE)


def gapped_straight_through(temperature: float = 1.0, gap: float = 1.0) -> Estimator:
    r"""Gapped straight-through (GST; Fan et al. 2022, "Training Discrete Deep Generative
    Models via Gapped Straight-Through Estimator"); biased.

    Forward: f at the exact sample D_k. Backward: the Gumbel-Softmax gradient at a
    perturbation of the logits that is a deterministic function of D_k instead of a random
    Gumbel: with m = max_c logits_c, the sampled class is raised to m and every other class
    lowered to at most m - gap,

        logits~_c = m (c = D),   min(logits_c, m - gap) (c != D),
        surrogate = f(D + y - sg(y)),  y = softmax((logits + sg(logits~ - logits)) / tau).

    So D is the argmax of logits~ by at least `gap` (the "consistency" and "gap" properties),
    and the only randomness left in the gradient is D itself: far less variance than
    ST-Gumbel, whose noise is resampled independently of D. For a Bernoulli (the two-class
    case with logits (0, a)) the perturbed logit is max(a, gap) when D = 1, min(a, -gap)
    when D = 0. The value is an unbiased MC estimate of E[f(z)]; the gradient is biased.

    Args:
      temperature: tau > 0 of the backward softmax (a one-line ValueError otherwise).
      gap: the margin kappa >= 0 (the paper's GST-1.0 uses 1.0).
    """
    temperature = check_temperature("gapped_straight_through", temperature)
    try:
        gap_value = float(gap)
    except (TypeError, ValueError):
        raise ValueError(f"gapped_straight_through: gap must be a number, got {gap!r}") from None
    if not (gap_value >= 0 and math.isfinite(gap_value)):
        raise ValueError(f"gapped_straight_through: gap must be >= 0 and finite, got {gap!r}")

    def estimate(f, dist, key, num_samples):
        _check_discrete("gapped_straight_through", dist)
        if not isinstance(dist, (Bernoulli, Categorical)):
            raise ValueError("gapped_straight_through needs a Bernoulli or Categorical "
                             f"distribution (independent logits), got {type(dist).__name__}")
        hard = dist.sample(key, (num_samples,))  # (K, *batch[, C]), no gradient
        fixed = jax.lax.stop_gradient(dist.logits)
        if isinstance(dist, Bernoulli):
            target = jnp.where(hard > 0, jnp.maximum(fixed, gap), jnp.minimum(fixed, -gap))
        else:
            top = jnp.max(fixed, axis=-1, keepdims=True)
            target = jnp.where(hard > 0, top, jnp.minimum(fixed, top - gap))
        soft = dist.soft(dist.logits + jax.lax.stop_gradient(target - fixed), temperature)
        return mean_over_samples(f, hard + (soft - jax.lax.stop_gradient(soft)))

    name = f"gapped_straight_through[{temperature},{gap}]"
    return Estimator(name=name, estimate=estimate, unbiased=False, cost=ONE)
