r"""The score-function estimator (REINFORCE, likelihood ratio) and its baselines.

Since grad p_theta = p_theta grad log p_theta,

    grad_theta E_{p_theta}[f(z)] = E_{p_theta}[ f(z) grad_theta log p_theta(z) ]
                                 = E_{p_theta}[ (f(z) - b) grad_theta log p_theta(z) ]

for any baseline b independent of z, because E[grad log p] = 0 (Williams 1992, "Simple
statistical gradient-following algorithms for connectionist reinforcement learning";
Glynn 1990; review: Mohamed et al. 2020, Sec. 4). It needs only `sample` and a `log_prob`
differentiable in the parameters: any distribution, discrete or not, and any f (f need not
be differentiable in z). Unbiased for every baseline below; the baseline changes only the
variance.

When f itself depends on parameters (a decoder), the gradient is
E[grad f(z) + f(z) grad log p(z)]. The surrogate uses the DiCE magic box
(Foerster et al. 2018), with the baseline in the form of Mao et al. (2019),

    surrogate = mean_k [ f(z_k) * MB(log p(z_k)) + b_k * (1 - MB(log p(z_k))) ],
    MB(x) = exp(x - stop_gradient(x)),

whose value is mean_k f(z_k) and whose gradient is mean_k [grad f(z_k) + (f(z_k) - b_k)
grad log p(z_k)]; its higher derivatives (jax.hessian, ...) are unbiased as well. log p is
summed over the event axes that f reduced (`core.event_log_prob`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_gen.estimators import control_variates as cvs
from ssl_gen.estimators.control_variates import (  # noqa: F401  (re-exported, their old home)
    MovingAverageState,
    moving_average_init,
    moving_average_update,
    moving_average_value,
)
from ssl_gen.estimators.core import (
    Estimator,
    event_log_prob,
    expand_trailing,
    magic_box,
    per_sample_cost,
    sum_event_axes,
)

BASELINES = (None, "moving_average", "loo", "optimal", "delta")


def _per_sample(f, dist, key, num_samples):
    """f_k MB(log p(z_k)) for each of the K samples: (K, *out); the DiCE surrogates."""
    if not (hasattr(dist, "sample") and hasattr(dist, "log_prob")):
        raise ValueError(f"score_function needs a distribution with sample and log_prob; "
                         f"{type(dist).__name__} has not both")
    zs = jax.lax.stop_gradient(dist.sample(key, (num_samples,)))  # (K, *batch[, C])
    fs = jax.vmap(f)(zs)  # (K, *out)
    return fs * magic_box(event_log_prob(dist, zs, fs))


def _estimate_plain(f, dist, key, num_samples):
    return jnp.mean(_per_sample(f, dist, key, num_samples), axis=0)


def _optimal_control_variate(dist, zs, fs):
    """sum_i c_i (theta_i - stop_gradient(theta_i)) per output, c_i = mean_k beta_ki h_ki.

    theta runs over every coordinate of the broadcast distribution's fields, h_ki is the
    score d log p(z_k) / d theta_i, and beta_ki = sum_{j != k} f_j h_ji^2 / sum_{j != k} h_ji^2
    is the variance-minimizing baseline E[f h_i^2] / E[h_i^2] estimated without sample k.
    Written for the score function on its own (not through `control_variates`' generic
    estimated coefficient, which regresses the centred per-sample gradients on the scores:
    the same beta in expectation, but on a 3x5 categorical at K = 4 its variance is 6x this
    one's, near plain REINFORCE's; `tests/estimators/test_score_function.py`).
    """
    full = dist.broadcast()  # every field has batch_shape as a prefix
    fixed = jax.lax.stop_gradient(full)
    scores = jax.vmap(lambda z: jax.grad(lambda d: jnp.sum(d.log_prob(z)))(fixed))(zs)
    f_fixed = jax.lax.stop_gradient(fs)
    out_ndim = fs.ndim - 1

    def field_term(theta, h):  # theta (*shape), h (K, *shape)
        h2 = jnp.square(h)
        num = cvs.leave_one_out_sum(expand_trailing(f_fixed, h.ndim) * h2)
        den = cvs.leave_one_out_sum(h2)
        beta = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
        coef = jnp.mean(beta * h, axis=0)
        return sum_event_axes(coef * (theta - jax.lax.stop_gradient(theta)), out_ndim)

    return sum(jax.tree.leaves(jax.tree.map(field_term, full, scores)))


def _estimate_optimal(f, dist, key, num_samples):
    if num_samples < 2:
        raise ValueError(f"score_function(baseline='optimal') needs num_samples >= 2, got "
                         f"{num_samples}")
    zs = jax.lax.stop_gradient(dist.sample(key, (num_samples,)))
    fs = jax.vmap(f)(zs)
    surrogate = jnp.mean(fs * magic_box(event_log_prob(dist, zs, fs)), axis=0)
    return surrogate - _optimal_control_variate(dist, zs, fs)


def score_function(
    baseline: str | None = None, *, decay: float | None = None, order: int | None = None
) -> Estimator:
    r"""The score-function (REINFORCE) estimator with a baseline (unbiased for every choice).

    grad E[f(z)] ~= mean_k [ grad f(z_k) + (f(z_k) - b_k) grad log p(z_k) ], z_k ~ p i.i.d.

    Args:
      baseline: how b_k is chosen (independent of z_k, so the estimate stays unbiased):
        - None: b = 0, plain REINFORCE (Williams 1992).
        - "moving_average": b = an exponential moving average of past f values, debiased
          like Adam; stateful (see `MovingAverageState`). Williams 1992; Mnih & Gregor 2014.
        - "loo": b_k = mean_{j != k} f(z_j), the leave-one-out baseline over the K samples
          (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!"). Needs
          num_samples >= 2.
        - "optimal": the optimal-coefficient control variate, one coefficient per parameter
          coordinate theta_i of the distribution's fields: the estimate uses
          (f - beta_i) d log p / d theta_i with beta_i = E[f h_i^2] / E[h_i^2] (h_i the score),
          the coefficient minimizing the variance of the control-variated estimator (Greensmith
          et al. 2004; Peters & Schaal 2008; Mohamed et al. 2020, Sec. 7). beta is estimated
          from the other K - 1 samples, so it stays unbiased. Needs num_samples >= 2. First
          derivatives only.
        - "delta": the Taylor (delta-method) control variate of a `Normal`, order 1 or 2
          (`control_variates.delta`): unbiased for any f twice differentiable in z, exact
          (zero variance) for f quadratic at order 2.
        Each is a control variate applied by `control_variates.with_control_variate`:
        "moving_average" = `moving_average(decay)`, "loo" = `leave_one_out()`, "optimal" =
        `constant()` with `coefficient="estimated_loo"`, "delta" = `delta(order)`; the same
        values apply to every other estimator (see that module).
      decay: the moving average's decay in [0, 1) (default 0.9); only for "moving_average".
      order: 1 or 2 (default 2), the Taylor order; only for "delta".

    Returns:
      An `Estimator`; stateful for "moving_average": `estimator.init()` gives the state, and
      `est.expectation(...)` then returns `objective(params, key, state) -> (value, state)`.
      The baseline used is the state passed in (independent of this call's samples); the new
      state folds in this call's mean f.
    """
    if baseline not in BASELINES:
        raise ValueError(f"score_function: unknown baseline {baseline!r}; choose from {BASELINES}")
    if decay is not None and baseline != "moving_average":
        raise ValueError("score_function: decay applies only to baseline='moving_average'")
    if order is not None and baseline != "delta":
        raise ValueError("score_function: order applies only to baseline='delta'")
    plain = Estimator(name="score_function", estimate=_estimate_plain, cost=per_sample_cost(1),
                      per_sample=_per_sample)
    if baseline is None:
        return plain
    if baseline == "loo":
        return cvs.with_control_variate(plain, cvs.leave_one_out())
    if baseline == "optimal":
        return Estimator(name="score_function[optimal]", estimate=_estimate_optimal,
                         min_samples=2, cost=per_sample_cost(1))
    if baseline == "delta":
        return cvs.with_control_variate(plain, cvs.delta(2 if order is None else order))
    decay = 0.9 if decay is None else float(decay)
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"score_function: decay must be in [0, 1), got {decay}")
    return cvs.with_control_variate(plain, cvs.moving_average(decay))
