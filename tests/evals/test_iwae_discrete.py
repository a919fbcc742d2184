"""The IWAE bound for discrete latents against the exact log-likelihood by enumeration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from ssl_gen.evals import iwae
from ssl_gen.models import dvae
from ssl_gen.objectives import discrete_elbo

X = np.random.default_rng(0).integers(0, 2, size=(5, 8, 8, 1)).astype(np.uint8)


@pytest.mark.parametrize("model", [
    dvae.Model(latent="bernoulli", num_latents=3, hidden=(8,)),  # 8 codes
    dvae.Model(latent="categorical", num_latents=2, num_classes=3, hidden=(8,)),  # 9 codes
], ids=["bernoulli", "categorical"])
def test_bound_between_elbo_and_exact_log_likelihood(model):
    params = model.init({"params": jax.random.key(0)}, X)
    q, prior = iwae.latent_distributions(model, params, X)
    assert type(q) is type(prior) and float(jnp.abs(prior.logits).max()) == 0  # uniform

    @jax.jit
    def exact(params):
        """By enumeration: log p(x) = logsumexp_z [log p(x|z) + log p(z)], the ELBO, and
        the relative variance Var_q[w] / p(x)^2 of the importance weight w = p(x, z) / q(z)."""
        codes = type(q)(q.logits[0]).support()  # (M, *latent): one example's joint codes
        every = lambda z: jnp.broadcast_to(z, (len(X),) + z.shape)  # the code for each x
        ll = jax.vmap(lambda z: model.apply(params, every(z), X,
                                            method=model.log_likelihood))(codes)  # (M, B)
        log_q = jax.vmap(lambda z: q.log_prob(every(z)).sum(-1))(codes)  # (M, B)
        log_joint = ll - np.log(len(codes))  # log p(x, z), uniform prior
        log_px = jax.nn.logsumexp(log_joint, axis=0)  # (B,)
        rel_var = jnp.exp(jax.nn.logsumexp(2 * log_joint - log_q, axis=0) - 2 * log_px) - 1
        loss, _ = discrete_elbo.loss_fn(params, {"image": X}, jax.random.key(0), model=model,
                                        estimator=est.exact())
        return log_px, -loss, rel_var  # -loss: the exact ELBO averaged over the batch

    log_px, elbo, rel_var = exact(params)
    bound = lambda k, n, c: iwae.iwae_bound(params, X, k, model=model, num_samples=n,
                                            chunk_size=c)
    keys = jax.random.split(jax.random.key(1), 40)
    # L_1 is an unbiased estimate of the ELBO: 40 x 5 draws whose sd here is ~2 nats, so the
    # mean's standard error is ~0.15 and 0.75 is 5 of them.
    l1 = float(np.mean([bound(k, 1, 1).mean() for k in keys]))
    assert abs(l1 - float(elbo)) < 0.75
    # L_k -> log p(x): at k = 512 its sd is sqrt(rel_var / k) (delta method); 5 sd.
    l512 = bound(jax.random.key(2), 512, 128)
    np.testing.assert_array_less(jnp.abs(l512 - log_px), 5 * jnp.sqrt(rel_var / 512) + 1e-3)
    assert float(jnp.mean(log_px)) - float(elbo) > 0.05  # a gap for the bound to close
    # L_8 (mean of 10 draws per example) sits between the ELBO and log p(x).
    l8 = float(np.mean([bound(k, 8, 8).mean() for k in keys[:10]]))
    assert float(elbo) < l8 < float(jnp.mean(log_px))
