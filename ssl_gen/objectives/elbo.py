"""The evidence lower bound for a VAE with a Gaussian posterior and prior N(0, I).

    ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)

The reconstruction term is a Monte Carlo expectation whose gradient comes from a configured
estimator (`ssl_gen.estimators`, pathwise by default); the KL term is analytic
(Kingma & Welling 2014, Appendix B). The loss is the negative ELBO averaged over the batch
(over its real examples when the batch carries an `example_mask`), in nats per example.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ssl_gen import estimators as est
from ssl_gen.objectives.estimator_config import make_estimator


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of x over the examples where mask is 1 (all of them when mask is None)."""
    if mask is None:
        return jnp.mean(x)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def loss_fn(
    params: Any,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    model,
    estimator: Any = "pathwise",
    num_samples: int = 1,
    beta: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Negative ELBO.

    Args:
      params: the model's variables (`{"params": ...}`).
      batch: `image` (B, H, W, C) integer levels; optional `example_mask` (B,).
      rng: key for the posterior samples.
      model: a `ssl_gen.models.vae.Model`.
      estimator: the gradient estimator of the reconstruction term (see `make_estimator`).
      num_samples: posterior samples per example (K); the term is their mean.
      beta: weight of the KL term (1 is the ELBO; beta-VAE otherwise).

    Returns:
      (loss, aux): loss = -mean ELBO (with beta), aux = {elbo, recon, kl} batch means.
    """
    x = batch["image"]

    def posterior(p):
        loc, scale = model.apply(p, x, method=model.encode)
        return est.Normal(loc, scale)

    def log_likelihood(z):  # z: (B, D) -> (B,); the decoder's gradient is pathwise
        return model.apply(params, z, x, method=model.log_likelihood)

    objective = est.expectation(log_likelihood, posterior, make_estimator(estimator), num_samples)
    recon = objective(params, rng)  # (B,)
    q = posterior(params)
    kl = jnp.sum(q.kl(est.standard_normal_like(q)), axis=-1)  # (B,)
    mask = batch.get("example_mask")
    elbo = recon - kl
    loss = -masked_mean(recon - beta * kl, mask)
    aux = {
        "elbo": masked_mean(elbo, mask),
        "recon": masked_mean(recon, mask),
        "kl": masked_mean(kl, mask),
    }
    return loss, aux
