r"""REBAR and RELAX: score function with a relaxed, reparameterized control variate.

For a discrete sample b = H(z) of perturbed logits z = logits + noise (Gumbel-Max, or the
logistic threshold of a Bernoulli), any differentiable c(z) gives the unbiased estimator

    g = [f(b) - c(z~)] grad log p(b) + grad c(z) - grad c(z~),
    z ~ p(z) (reparameterized),   z~ ~ p(z | b) (reparameterized given b),

because E[grad c(z)] = grad E[c(z)] = E_b[ E[c(z~) | b] grad log p(b) + grad E[c(z~) | b] ]:
the last two terms add back exactly what the control variate c(z~) removed from the score
function, whatever c is. `conditional_perturb` draws z~ (Tucker et al. 2017, App. C).

- REBAR (Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017, "REBAR: Low-variance, unbiased
  gradient estimates for discrete latent variable models"): c(z) = eta f(sigma_lambda(z)),
  f at the Concrete relaxation with temperature lambda.
- RELAX (Grathwohl, Choi, Wu, Roeder & Duvenaud 2018, "Backpropagation through the Void"):
  c_phi(z) = eta f(sigma_lambda(z)) + r_rho(z), a learned control variate, phi = (eta,
  lambda, rho). Unbiased for every phi, so phi is trained to minimize the variance: since
  E[g] does not depend on phi, d Var(g) / d phi = d E[g^2] / d phi = E[2 g dg/dphi],
  estimated by differentiating the squared estimate itself (a second derivative).

Both need f defined and differentiable on relaxed values (points of the simplex / unit
interval), like Gumbel-Softmax; b itself is exact, so the value mean_k f(b_k) is unbiased and
parameters that f closes over get the pathwise gradient of that mean. Cost per sample: f at
b, f at two relaxed points and their gradients (RELAX: plus a second derivative for phi).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ssl_gen.estimators.core import Estimator, event_log_prob, per_sample_cost, sum_event_axes
from ssl_gen.estimators.distributions import Bernoulli, Categorical
from ssl_gen.estimators.relaxed import check_temperature

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


class RelaxParams(NamedTuple):
    """The control variate c(z) = eta f(sigma_lambda(z)) + sum_i r(z_i), with the small
    network r(x) = w2 . tanh(w1 x + b1).

    r acts on each perturbed logit (each unit of a Bernoulli, each class of a categorical)
    with shared weights and is summed over the event axes: one network for any latent
    shape, so `init()` needs no example. `hidden = 0` leaves REBAR's two scalars.
    """

    eta: jax.Array  # ()
    log_temperature: jax.Array  # (), lambda = exp(log_temperature)
    w1: jax.Array  # (H,)
    b1: jax.Array  # (H,)
    w2: jax.Array  # (H,), zero at init: RELAX starts as REBAR


class RelaxState(NamedTuple):
    """RELAX's state: the control variate's parameters and their Adam moments.

    Attributes:
      params: the `RelaxParams` used by the next call.
      mu, nu: Adam's first and second moment estimates (Kingma & Ba 2015), like `params`.
      count: updates so far (int32).
    """

    params: RelaxParams
    mu: RelaxParams
    nu: RelaxParams
    count: jax.Array


def _check_dist(name: str, dist) -> None:
    if not isinstance(dist, (Bernoulli, Categorical)):
        raise ValueError(f"{name} needs a Bernoulli or Categorical distribution, got "
                         f"{type(dist).__name__}")


def _control_variate(params: RelaxParams, f, dist, z: jax.Array, out_ndim: int) -> jax.Array:
    """c(z) of one perturbed sample z (*batch[, C]), shape (*out)."""
    relaxed = dist.soft(z, jnp.exp(params.log_temperature))
    hidden = jnp.tanh(z[..., None] * params.w1 + params.b1)  # (*batch[, C], H)
    residual = hidden @ params.w2  # (*batch[, C])
    return params.eta * f(relaxed) + sum_event_axes(residual, out_ndim)


def _estimate(name, f, dist, key, num_samples, params):
    """(surrogate value, params -> the (*batch[, C]) gradient estimate g) of one call; the
    surrogate's gradient in the logits is g at `params`."""
    _check_dist(name, dist)
    fixed = jax.lax.stop_gradient(dist)
    key_z, key_tilde = jax.random.split(key)
    noise = fixed.perturb(key_z, (num_samples,)) - fixed.logits  # (K, *batch[, C])
    hard = fixed.hard(fixed.logits + noise)  # b_k, no gradient
    fs = jax.vmap(f)(hard)  # (K, *out)
    out_ndim = fs.ndim - 1
    if hard.shape[1 : fs.ndim] != fs.shape[1:]:
        raise ValueError(f"f's output shape {fs.shape[1:]} must be a prefix of the sample's "
                         f"batch shape {fixed.batch_shape} (f reduces trailing event axes only)")
    f_hard = jax.lax.stop_gradient(fs)

    def gradient_surrogate(logits, params):
        """A scalar whose gradient in `logits` is g (summed over the outputs, each of which
        reads its own rows); it depends on `params` through g only as the estimator does."""
        d = fixed._replace(logits=logits)
        z = logits + noise  # reparameterized z ~ p(z)
        z_tilde = d.conditional_perturb(key_tilde, hard)  # reparameterized z~ ~ p(z | b)
        cv = jax.vmap(lambda zk: _control_variate(params, f, d, zk, out_ndim))
        score = (f_hard - cv(jax.lax.stop_gradient(z_tilde))) * event_log_prob(d, hard, fs)
        return jnp.sum(jnp.mean(score + cv(z) - cv(z_tilde), axis=0))

    grad_fn = lambda p: jax.grad(gradient_surrogate)(fixed.logits, p)
    g = jax.lax.stop_gradient(grad_fn(params))  # (*batch[, C])
    linear = sum_event_axes(g * (dist.logits - fixed.logits), out_ndim)  # value 0, gradient g
    return jnp.mean(fs, axis=0) + linear, grad_fn


def rebar(temperature: float = 0.5, eta: float = 1.0) -> Estimator:
    r"""REBAR (Tucker et al. 2017) for `Bernoulli` / `Categorical` latents: unbiased.

        g = [f(b) - eta f(sigma_lambda(z~))] grad log p(b)
            + eta grad f(sigma_lambda(z)) - eta grad f(sigma_lambda(z~))

    with z the perturbed logits (b = H(z) the exact sample), z~ ~ p(z | b) reparameterized
    and sigma_lambda the Concrete relaxation at temperature lambda (see the module
    docstring). Unbiased for every eta and lambda, which only change the variance; the paper
    tunes both online by gradient descent on the variance, which is `relax(hidden=0)`: here
    they are fixed. Requires f defined and differentiable on relaxed values.

    Args:
      temperature: lambda > 0 of the relaxation in the control variate.
      eta: the control variate's scale (1 is the plain REBAR).
    """
    temperature = float(check_temperature("rebar", temperature))
    eta = float(eta)

    def estimate(f, dist, key, num_samples):
        _check_dist("rebar", dist)
        dtype = jnp.result_type(dist.logits, float)  # the logits' precision, in both modes
        empty = jnp.zeros((0,), dtype)
        params = RelaxParams(jnp.asarray(eta, dtype), jnp.asarray(math.log(temperature), dtype),
                             empty, empty, empty)
        return _estimate("rebar", f, dist, key, num_samples, params)[0]

    return Estimator(name=f"rebar[{temperature},{eta}]", estimate=estimate, unbiased=True,
                     cost=per_sample_cost(4))  # f at b and at 3 relaxed points


def relax_init(temperature: float = 0.5, hidden: int = 16, seed: int = 0) -> RelaxState:
    """The initial state: eta = 1, lambda = temperature, r = 0 (REBAR), zero moments.

    float32 in both modes (like every estimator state): a float64 problem promotes what
    it combines with them, a float32 one stays float32 under `jax_enable_x64`."""
    f32 = jnp.float32
    w1 = jax.random.normal(jax.random.key(seed), (hidden,), f32)
    params = RelaxParams(jnp.ones((), f32), jnp.asarray(math.log(temperature), f32), w1,
                         jnp.zeros((hidden,), f32), jnp.zeros((hidden,), f32))
    zeros = jax.tree.map(jnp.zeros_like, params)
    return RelaxState(params, zeros, zeros, jnp.zeros((), jnp.int32))


def relax_update(state: RelaxState, grads: RelaxParams, learning_rate: float) -> RelaxState:
    """One Adam step on the control variate's parameters (no gradient flows through it)."""
    grads = jax.lax.stop_gradient(grads)
    count = state.count + 1
    mu = jax.tree.map(lambda m, g: ADAM_B1 * m + (1 - ADAM_B1) * g, state.mu, grads)
    nu = jax.tree.map(lambda v, g: ADAM_B2 * v + (1 - ADAM_B2) * g * g, state.nu, grads)
    c1, c2 = 1 - ADAM_B1 ** count.astype(jnp.float32), 1 - ADAM_B2 ** count.astype(jnp.float32)
    step = lambda p, m, v: p - learning_rate * (m / c1) / (jnp.sqrt(v / c2) + ADAM_EPS)
    return RelaxState(jax.tree.map(step, state.params, mu, nu), mu, nu, count)


def relax(
    temperature: float = 0.5, hidden: int = 16, learning_rate: float = 1e-2, seed: int = 0
) -> Estimator:
    r"""RELAX (Grathwohl et al. 2018) for `Bernoulli` / `Categorical` latents: unbiased,
    with a learned control variate; stateful.

        g = [f(b) - c_phi(z~)] grad log p(b) + grad c_phi(z) - grad c_phi(z~),
        c_phi(z) = eta f(sigma_lambda(z)) + sum_i r_rho(z_i)      (`RelaxParams`),

    unbiased for every phi (module docstring). Training phi: each call also takes one Adam
    step on phi along d/dphi sum_i g_i^2, an unbiased estimate of d Var(g) / d phi (E[g]
    does not depend on phi), the variance objective of Grathwohl et al. (Sec. 3, Alg. 2)
    and of REBAR's online tuning of (eta, lambda). g here is the gradient with respect to
    the distribution's parameters (its logits), summed over all coordinates: exactly the
    paper's objective when the logits are the trained parameters (the toy problems), a
    proxy for the variance with respect to upstream weights (a VAE's encoder) otherwise.

    The state (`RelaxState`) follows the package's stateful protocol: `init()` gives it,
    `objective(params, key, state)` returns `(value, new_state)`; the estimate uses the phi
    passed in (independent of this call's samples, so it stays unbiased) and `new_state`
    holds phi after this call's step (no gradient). Requires f defined and differentiable
    on relaxed values; cost: REBAR's plus a second derivative for phi.

    Args:
      temperature: the initial lambda > 0.
      hidden: width H >= 0 of r_rho (0: REBAR with online-tuned eta and lambda).
      learning_rate: Adam's step size for phi (> 0).
      seed: the seed of r_rho's first-layer weights (the last layer starts at zero).
    """
    temperature = float(check_temperature("relax", temperature))
    if not isinstance(hidden, int) or hidden < 0:
        raise ValueError(f"relax: hidden must be an int >= 0, got {hidden!r}")
    if not float(learning_rate) > 0:
        raise ValueError(f"relax: learning_rate must be > 0, got {learning_rate!r}")

    def estimate(f, dist, key, num_samples, state):
        value, grad_fn = _estimate("relax", f, dist, key, num_samples, state.params)
        variance_grad = jax.grad(lambda p: jnp.sum(jnp.square(grad_fn(p))))(state.params)
        return value, relax_update(state, variance_grad, learning_rate)

    return Estimator(name=f"relax[{hidden}]", estimate=estimate, unbiased=True,
                     init=lambda: relax_init(temperature, hidden, seed),
                     cost=per_sample_cost(7))  # REBAR's 4, plus 3 in phi's second derivative
