"""The pathwise (reparameterization) estimator.

For a distribution with a differentiable sampling path z = g(theta, eps), eps ~ q(eps)
independent of theta,

    grad_theta E_{p_theta}[f(z)] = E_{q(eps)}[ grad_z f(g(theta, eps)) grad_theta g(theta, eps) ],

estimated by averaging over K draws of eps (Kingma & Welling 2014; Rezende et al. 2014;
review: Mohamed et al. 2020, "Monte Carlo Gradient Estimation in Machine Learning", Sec. 5).
Unbiased. Requires f differentiable in z and a distribution with `rsample` (loc-scale
families such as `Normal`); asking for it on a distribution without one is an error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_gen.estimators.core import Estimator, per_sample_cost


def _per_sample(f, dist, key, num_samples):
    if not getattr(dist, "has_rsample", False):
        raise ValueError(
            f"pathwise needs a reparameterizable distribution; {type(dist).__name__} has none "
            "(use score_function, or a relaxation such as gumbel_softmax for discrete latents)"
        )
    return jax.vmap(f)(dist.rsample(key, (num_samples,)))  # (K, *out)


def _estimate(f, dist, key, num_samples):
    return jnp.mean(_per_sample(f, dist, key, num_samples), axis=0)


def pathwise() -> Estimator:
    """The reparameterization-trick estimator (unbiased; needs `dist.rsample`)."""
    return Estimator(name="pathwise", estimate=_estimate, unbiased=True, cost=per_sample_cost(1),
                     per_sample=_per_sample)
