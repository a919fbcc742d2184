r"""The measure-valued derivative for the diagonal Gaussian, with coupling.

The derivative of a density with respect to one parameter is a signed measure, written as a
constant times the difference of two densities (a weak derivative, Pflug 1989):

    d/dtheta_i E_{p_theta}[f(z)] = c_theta ( E_{p+}[f(z)] - E_{p-}[f(z)] ).

For N(mu, sigma^2), per coordinate i, with the other coordinates drawn from p itself
(Mohamed et al. 2020, "Monte Carlo Gradient Estimation in Machine Learning", Sec. 6):

- mu_i:    c = 1 / (sigma_i sqrt(2 pi)); p+- = mu_i +- sigma_i W, W ~ Weibull(2, sqrt 2)
           (Rayleigh); coupled by using the same W on both sides.
- sigma_i: c = 1 / sigma_i; p+ = mu_i + sigma_i M, M ~ double-sided Maxwell, p- = the
           Gaussian itself, coupled as mu_i + sigma_i M U with U ~ U(0, 1) (M U ~ N(0, 1)).

Unbiased; f need not be differentiable. The cost is 4 E + 1 evaluations of f per sample,
E the number of event coordinates (the latent coordinates that one output of f reads), so it
suits low-dimensional latents. Requires a `Normal`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ssl_gen.estimators.core import Estimator, sum_event_axes
from ssl_gen.estimators.distributions import Normal

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _per_coordinate_diff(f, z, plus, minus, out_ndim):
    """f(z with event coordinate e replaced by `plus`) - (... by `minus`), every e at once.

    z, plus, minus: (*batch). Returns (*batch): entry (row, e) is the difference for output
    `row` when its event coordinate e is replaced (all rows are replaced together; row r of f
    reads only row r of z, the shape rule).
    """
    event_shape = z.shape[out_ndim:]
    num_events = math.prod(event_shape)
    masks = jnp.eye(num_events, dtype=bool).reshape((num_events,) + event_shape)  # (E, *event)

    def diff(mask):  # mask (*event), broadcast over the output (row) axes
        return f(jnp.where(mask, plus, z)) - f(jnp.where(mask, minus, z))  # (*out)

    d = jax.vmap(diff)(masks)  # (E, *out)
    return jnp.moveaxis(d, 0, -1).reshape(z.shape)  # (*out, E) -> (*batch)


def measure_valued() -> Estimator:
    r"""The coupled measure-valued derivative for a diagonal `Normal` (unbiased).

    Per sample k and coordinate i, with z_k ~ N(mu, sigma^2) for the other coordinates:

        g_mu_i    = (f(z_k; z_i = mu_i + sigma_i W) - f(z_k; z_i = mu_i - sigma_i W))
                    / (sigma_i sqrt(2 pi)),                       W ~ Rayleigh(1),
        g_sigma_i = (f(z_k; z_i = mu_i + sigma_i M) - f(z_k; z_i = mu_i + sigma_i M U))
                    / sigma_i,                                    M ~ DS-Maxwell, U ~ U(0,1).

    Pflug (1989); Heidergott & Vazquez-Abad (2000); Mohamed et al. (2020), Sec. 6. The value
    is mean_k f(z_k) (parameters f closes over get the pathwise gradient of that). Cost:
    4 E + 1 f-evaluations per sample (E = event coordinates per output). f need not be
    differentiable. Requires a `Normal`.
    """

    def estimate(f, dist, key, num_samples):
        if not isinstance(dist, Normal):
            raise ValueError(
                f"measure_valued needs a Normal distribution, got {type(dist).__name__}"
            )
        full = dist.broadcast()
        loc, scale = jax.lax.stop_gradient(full.loc), jax.lax.stop_gradient(full.scale)
        shape = (num_samples,) + loc.shape
        # Two draws feed every variate (fewer random ops compile faster): normals for z and
        # the Maxwell radius, uniforms for the Rayleigh, the Maxwell sign and the coupling.
        k_normal, k_uniform = jax.random.split(key)
        normals = jax.random.normal(k_normal, shape + (4,), loc.dtype)
        uniforms = jax.random.uniform(k_uniform, shape + (3,), loc.dtype)
        z = loc + scale * normals[..., 0]  # (K, *batch)
        fs = jax.vmap(f)(z)  # (K, *out)
        out_ndim = fs.ndim - 1
        if z.shape[1 : fs.ndim] != fs.shape[1:]:
            raise ValueError(
                f"f's output shape {fs.shape[1:]} must be a prefix of the sample's batch "
                f"shape {z.shape[1:]} (f reduces trailing event axes only)"
            )
        rayleigh = jnp.sqrt(-2.0 * jnp.log1p(-uniforms[..., 0]))  # inverse CDF, U in [0, 1)
        # |M| ~ chi with 3 degrees of freedom: the norm of a standard 3-vector.
        radius = jnp.linalg.norm(normals[..., 1:], axis=-1)
        maxwell = jnp.where(uniforms[..., 1] < 0.5, radius, -radius)
        uniform = uniforms[..., 2]

        per_sample = jax.vmap(lambda *a: _per_coordinate_diff(f, *a, out_ndim))
        d_loc = per_sample(z, loc + scale * rayleigh, loc - scale * rayleigh)
        d_scale = per_sample(z, loc + scale * maxwell, loc + scale * maxwell * uniform)
        g_loc = jnp.mean(jax.lax.stop_gradient(d_loc), axis=0) * _INV_SQRT_2PI / scale
        g_scale = jnp.mean(jax.lax.stop_gradient(d_scale), axis=0) / scale
        linear = g_loc * (full.loc - loc) + g_scale * (full.scale - scale)  # value 0
        return jnp.mean(fs, axis=0) + sum_event_axes(linear, out_ndim)

    return Estimator(name="measure_valued", estimate=estimate, unbiased=True)
