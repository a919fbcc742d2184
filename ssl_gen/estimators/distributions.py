"""Distributions for the estimators: small immutable pytrees with the math in one place.

A distribution is a NamedTuple of arrays (so it is a pytree: it flows through `jax.jit`,
`jax.vmap` and `jax.grad`, and an estimator differentiates with respect to its fields).

Shapes. `batch_shape` is the broadcast shape of the parameters. `sample(key, shape)` returns
an array of shape `shape + batch_shape` (one-hot categoricals add the class axis).
`log_prob(z)` is elementwise over the batch shape (no axis is summed): an estimator sums
the trailing axes that the function f reduced (see `ssl_gen.estimators.core`).

Capabilities are class constants (not pytree fields) that estimators check, so asking for
an estimator a distribution cannot support is a one-line error at trace time:

- `has_rsample`: `rsample(key, shape)` is a differentiable sample (pathwise).
- `is_discrete`: `support()` enumerates every joint value (exact), and the relaxation
  interface used by Gumbel-Softmax and straight-through: `perturb(key, shape)` (logits plus
  Gumbel or logistic noise), `hard(perturbed)` (the exact sample: Gumbel-Max), `soft(perturbed,
  temperature)` (its Concrete relaxation), `mean()` (E[z], the straight-through surrogate) and
  `conditional_perturb(key, hard)` (perturbed logits drawn given their hard sample,
  differentiable in the logits: Gumbel-Rao, REBAR, RELAX).

Every distribution has `broadcast()`: the same distribution with each field broadcast so
that `batch_shape` is a prefix of its shape (estimators that work per coordinate use it).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Normal(NamedTuple):
    """Diagonal Gaussian N(loc, scale^2), elementwise.

    Reparameterizable: z = loc + scale * eps, eps ~ N(0, 1) (Kingma & Welling 2014).
    """

    loc: jax.Array
    scale: jax.Array

    has_rsample = True  # class constants, not pytree fields
    is_discrete = False

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.scale))

    def noise(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """Standard normal noise eps of shape `shape + batch_shape`."""
        dtype = jnp.result_type(self.loc, self.scale, float)
        return jax.random.normal(key, tuple(shape) + self.batch_shape, dtype)

    def rsample(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """A reparameterized sample loc + scale * eps: differentiable in loc and scale."""
        return self.loc + self.scale * self.noise(key, shape)

    def sample(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """A sample with no gradient path to the parameters."""
        return jax.lax.stop_gradient(self.rsample(key, shape))

    def log_prob(self, z: jax.Array) -> jax.Array:
        """log N(z; loc, scale^2), elementwise."""
        u = (z - self.loc) / self.scale
        return -0.5 * jnp.square(u) - jnp.log(self.scale) - _HALF_LOG_2PI

    def entropy(self) -> jax.Array:
        """0.5 log(2 pi e scale^2), elementwise."""
        return jnp.broadcast_to(0.5 + _HALF_LOG_2PI + jnp.log(self.scale), self.batch_shape)

    def mean(self) -> jax.Array:
        return jnp.broadcast_to(self.loc, self.batch_shape)

    def broadcast(self) -> Normal:
        """The same distribution with loc and scale broadcast to `batch_shape`."""
        shape = self.batch_shape
        return Normal(jnp.broadcast_to(self.loc, shape), jnp.broadcast_to(self.scale, shape))

    def kl(self, other: Normal) -> jax.Array:
        """KL(self || other) in closed form, elementwise:
        log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2."""
        var_ratio = jnp.square(self.scale / other.scale)
        t = jnp.square((self.loc - other.loc) / other.scale)
        return 0.5 * (var_ratio + t - 1.0 - jnp.log(var_ratio))


def standard_normal_like(dist: Normal) -> Normal:
    """N(0, 1) with the batch shape of `dist` (the usual VAE prior)."""
    zeros = jnp.zeros(dist.batch_shape, jnp.result_type(dist.loc, float))
    return Normal(zeros, jnp.ones_like(zeros))


def conditional_gumbel(logits: jax.Array, hard: jax.Array, key: jax.Array) -> jax.Array:
    """logits + G with G ~ Gumbel(0, 1) conditioned on argmax(logits + G) = the one-hot `hard`.

    The maximum of the perturbed logits is log Z + Gumbel (Z = sum_c exp(logits_c)), the
    argmax is independent of it, and every other perturbed logit is a Gumbel at its logit
    truncated below that maximum; by inverse CDFs with E_c ~ Exp(1) i.i.d. (b = the argmax):

        top = log Z - log E_b,    other_c = -log(exp(-top) + E_c exp(-logits_c)).

    Differentiable in `logits` with E fixed: a reparameterization of the conditional
    (Maddison et al. 2014; Tucker et al. 2017, App. C; Paulus et al. 2021, Eq. 9).
    `logits` broadcasts against `hard` (leading sample axes, class axis last).
    """
    dtype = jnp.result_type(logits, float)
    logits = jnp.broadcast_to(logits, hard.shape)
    exponentials = jax.random.exponential(key, hard.shape, dtype)
    log_e = jnp.log(jnp.maximum(exponentials, jnp.finfo(dtype).tiny))  # E = 0 has prob ~1e-38
    log_e_top = jnp.sum(hard * log_e, axis=-1, keepdims=True)
    log_z = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    top = log_z - log_e_top
    return jnp.where(hard > 0, top, -jnp.logaddexp(log_e - logits, -top))


class Bernoulli(NamedTuple):
    """Independent Bernoulli variables with P(z = 1) = sigmoid(logits), elementwise.

    Samples are 0./1. floats of `shape + batch_shape`. Not reparameterizable; sampling is the
    sign of the logistic-perturbed logits, 1[logits + L > 0] with L ~ Logistic(0, 1), whose
    relaxation sigmoid((logits + L) / temperature) is the binary Concrete distribution
    (Maddison et al. 2017; Jang et al. 2017).
    """

    logits: jax.Array

    has_rsample = False
    is_discrete = True

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return jnp.shape(self.logits)

    @property
    def probs(self) -> jax.Array:
        return jax.nn.sigmoid(self.logits)

    def perturb(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """logits + L, L ~ Logistic(0, 1), of shape `shape + batch_shape`."""
        dtype = jnp.result_type(self.logits, float)
        noise = jax.random.logistic(key, tuple(shape) + self.batch_shape, dtype)
        return self.logits + noise

    def hard(self, perturbed: jax.Array) -> jax.Array:
        """The exact sample 1[perturbed > 0] as a float (no gradient)."""
        return jax.lax.stop_gradient((perturbed > 0).astype(perturbed.dtype))

    def soft(self, perturbed: jax.Array, temperature: float) -> jax.Array:
        """The binary Concrete relaxation sigmoid(perturbed / temperature)."""
        return jax.nn.sigmoid(perturbed / temperature)

    def conditional_perturb(self, key: jax.Array, hard: jax.Array) -> jax.Array:
        """logits + L conditioned on 1[logits + L > 0] = `hard` (0./1., any leading axes).

        With L = logit(u), u ~ U(0, 1), the sample is 1 exactly when u > 1 - p, so given it
        u = 1 - p w (hard = 1) or (1 - p) w (hard = 0), w ~ U(0, 1); in stable form, with
        a = logits and softplus(a) = a - log p,

            hard = 1:  softplus(a) - log w + log1p(-p w)        (> -log w > 0)
            hard = 0:  -softplus(-a) + log w - log1p(-(1 - p) w)  (< log w < 0)

        Differentiable in the logits: the reparameterized conditional of REBAR (Tucker et al.
        2017, App. C) and RELAX; its noise alone, Gumbel-Rao. One uniform per unit.
        """
        logits = jnp.broadcast_to(self.logits, hard.shape)
        dtype = jnp.result_type(logits, float)
        w = jax.random.uniform(key, hard.shape, dtype, minval=jnp.finfo(dtype).tiny)
        p, log_w = jax.nn.sigmoid(logits), jnp.log(w)
        one = jax.nn.softplus(logits) - log_w + jnp.log1p(-p * w)
        zero = -jax.nn.softplus(-logits) + log_w - jnp.log1p(-(1.0 - p) * w)
        return jnp.where(hard > 0, one, zero)

    def sample(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """0./1. samples of `shape + batch_shape`, with no gradient path to the logits."""
        return self.hard(self.perturb(key, shape))

    def log_prob(self, z: jax.Array) -> jax.Array:
        """z log p + (1 - z) log(1 - p) = z * logits - softplus(logits), elementwise."""
        return z * self.logits - jax.nn.softplus(self.logits)

    def entropy(self) -> jax.Array:
        """-p log p - (1 - p) log(1 - p), elementwise."""
        p = self.probs
        return p * jax.nn.softplus(-self.logits) + (1.0 - p) * jax.nn.softplus(self.logits)

    def mean(self) -> jax.Array:
        return self.probs

    def broadcast(self) -> Bernoulli:
        return self

    def kl(self, other: Bernoulli) -> jax.Array:
        """KL(self || other) = p log(p/q) + (1 - p) log((1 - p)/(1 - q)), elementwise."""
        p = self.probs
        log_p, log_1mp = -jax.nn.softplus(-self.logits), -jax.nn.softplus(self.logits)
        log_q, log_1mq = -jax.nn.softplus(-other.logits), -jax.nn.softplus(other.logits)
        return p * (log_p - log_q) + (1.0 - p) * (log_1mp - log_1mq)

    def support(self) -> jax.Array:
        """Every joint value, shape (2**n, *batch_shape) with n = prod(batch_shape)."""
        n = math.prod(self.batch_shape)
        bits = (jnp.arange(2**n)[:, None] >> jnp.arange(n)[None, :]) & 1  # (2**n, n)
        dtype = jnp.result_type(self.logits, float)
        return bits.astype(dtype).reshape((2**n,) + self.batch_shape)


class Categorical(NamedTuple):
    """Independent categorical variables over the last axis of `logits`, one-hot samples.

    `batch_shape` is `logits.shape[:-1]`; a sample has shape `shape + batch_shape + (C,)`.
    Sampling is Gumbel-Max: onehot(argmax(logits + G)), G ~ Gumbel(0, 1) i.i.d. (Gumbel 1954;
    Maddison et al. 2014), whose relaxation softmax((logits + G) / temperature) is the
    Concrete / Gumbel-Softmax distribution (Maddison et al. 2017; Jang et al. 2017).
    """

    logits: jax.Array

    has_rsample = False
    is_discrete = True

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return jnp.shape(self.logits)[:-1]

    @property
    def num_classes(self) -> int:
        return jnp.shape(self.logits)[-1]

    @property
    def probs(self) -> jax.Array:
        return jax.nn.softmax(self.logits, axis=-1)

    def perturb(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """logits + G, G ~ Gumbel(0, 1), of shape `shape + batch_shape + (C,)`."""
        dtype = jnp.result_type(self.logits, float)
        noise = jax.random.gumbel(key, tuple(shape) + jnp.shape(self.logits), dtype)
        return self.logits + noise

    def hard(self, perturbed: jax.Array) -> jax.Array:
        """Gumbel-Max: onehot(argmax(perturbed)) over the class axis (no gradient)."""
        one_hot = jax.nn.one_hot(jnp.argmax(perturbed, axis=-1), self.num_classes,
                                 dtype=perturbed.dtype)
        return jax.lax.stop_gradient(one_hot)

    def soft(self, perturbed: jax.Array, temperature: float) -> jax.Array:
        """The Concrete relaxation softmax(perturbed / temperature) over the class axis."""
        return jax.nn.softmax(perturbed / temperature, axis=-1)

    def conditional_perturb(self, key: jax.Array, hard: jax.Array) -> jax.Array:
        """logits + G conditioned on onehot(argmax(logits + G)) = `hard` (any leading axes).

        `conditional_gumbel`: differentiable in the logits (the reparameterized conditional
        that REBAR/RELAX use; its noise alone, Gumbel-Rao).
        """
        return conditional_gumbel(self.logits, hard, key)

    def sample(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """One-hot samples of `shape + batch_shape + (C,)`, with no gradient to the logits."""
        return self.hard(self.perturb(key, shape))

    def log_prob(self, z: jax.Array) -> jax.Array:
        """log p(z) = sum_c z_c log softmax(logits)_c for one-hot z (the class axis summed)."""
        return jnp.sum(z * jax.nn.log_softmax(self.logits, axis=-1), axis=-1)

    def entropy(self) -> jax.Array:
        """-sum_c p_c log p_c, elementwise over the batch shape."""
        log_p = jax.nn.log_softmax(self.logits, axis=-1)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)

    def mean(self) -> jax.Array:
        """E[z] = softmax(logits): the mean of the one-hot sample."""
        return self.probs

    def broadcast(self) -> Categorical:
        return self

    def kl(self, other: Categorical) -> jax.Array:
        """KL(self || other) = sum_c p_c (log p_c - log q_c), elementwise over the batch."""
        log_p = jax.nn.log_softmax(self.logits, axis=-1)
        log_q = jax.nn.log_softmax(other.logits, axis=-1)
        return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)

    def support(self) -> jax.Array:
        """Every joint value, one-hot: shape (C**n, *batch_shape, C), n = prod(batch_shape)."""
        n, c = math.prod(self.batch_shape), self.num_classes
        digits = (jnp.arange(c**n)[:, None] // c ** jnp.arange(n)[None, :]) % c  # (C**n, n)
        one_hot = jax.nn.one_hot(digits, c, dtype=jnp.result_type(self.logits, float))
        return one_hot.reshape((c**n,) + self.batch_shape + (c,))
