"""Test log-likelihood by importance sampling: the IWAE bound (Burda et al. 2016).

    log p(x) >= L_k(x) = E[ log (1/k) sum_i p(x, z_i) / q(z_i | x) ],  z_i ~ q(z | x),

with L_1 the ELBO, L_k non-decreasing in k and L_k -> log p(x) as k -> infinity. The
standard test NLL of a VAE is -L_k with k = 5000 (Burda et al. 2016, Sec. 5). The k samples
are drawn in chunks (one `lax.scan` step each) and combined by a running logsumexp, so
memory is that of one chunk.

Latents: a Gaussian VAE (`encode(x) -> (loc, scale)`, prior N(0, I)) or a discrete one
(`ssl_gen.models.dvae`: `latent_type` "categorical"/"bernoulli", `encode(x) -> logits`,
uniform prior); `latent_distributions` makes q(z|x) and p(z) for either.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from ssl_gen import estimators as est
from ssl_gen.evals.context import EvalContext, model_variables
from ssl_gen.models import protocols


def latent_distributions(model, params, x):
    """(q(z|x), p(z)) as `ssl_gen.estimators` distributions with batch shape (B, ...)."""
    if not isinstance(model, protocols.LatentModel):
        raise TypeError(f"iwae: {type(model).__name__} is not a LatentModel (encode, "
                        "log_likelihood: ssl_gen.models.protocols)")
    latent = model.latent_type if isinstance(model, protocols.DiscreteLatents) else "gaussian"
    if latent in ("categorical", "bernoulli"):
        logits = model.apply(params, x, method=model.encode)  # (B, N, C) or (B, N)
        family = est.Categorical if latent == "categorical" else est.Bernoulli
        return family(logits), family(jnp.zeros_like(logits))  # uniform prior
    loc, scale = model.apply(params, x, method=model.encode)
    q = est.Normal(loc, scale)
    return q, est.standard_normal_like(q)


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "chunk_size"))
def iwae_bound(params, x, key, *, model, num_samples: int, chunk_size: int):
    """L_k(x) per example, (B,), for a model with `encode` and `log_likelihood`.

    Args:
      params: model variables. x: (B, ...) integer images. key: PRNG key.
      model: a VAE with `encode` and `log_likelihood(z, x) -> (B,)`, Gaussian or discrete
        (see `latent_distributions`).
      num_samples: k. chunk_size: samples per scan step; must divide k.
    """
    if num_samples % chunk_size:
        raise ValueError(f"iwae: chunk_size {chunk_size} must divide num_samples {num_samples}")
    q, prior = latent_distributions(model, params, x)

    def one_chunk(acc, k):
        z = q.sample(k, (chunk_size,))  # (c, B, D), or (c, B, N, C) one-hot
        ll = jax.vmap(lambda zz: model.apply(params, zz, x, method=model.log_likelihood))(z)
        # log_prob is (c, B, D) for every family (a categorical's sums its class axis).
        log_w = ll + jnp.sum(prior.log_prob(z) - q.log_prob(z), axis=-1)  # (c, B)
        return jnp.logaddexp(acc, jax.nn.logsumexp(log_w, axis=0)), None

    init = jnp.full(x.shape[:1], -jnp.inf, jnp.float32)
    total, _ = jax.lax.scan(one_chunk, init, jax.random.split(key, num_samples // chunk_size))
    return total - math.log(num_samples)


def evaluate(state, ctx: EvalContext, *, num_samples: int = 5000, chunk_size: int = 500,
             prefix: str = "") -> dict[str, float]:
    """Test NLL = -mean L_k over the eval split, and the 1-sample ELBO, in nats per example.

    Args:
      state: the train state (its model variables are evaluated). ctx: the trainer's
        `EvalContext`.
      num_samples: k (5000 is the standard reported figure). chunk_size: memory knob.
      prefix: prepended to metric names (e.g. "final_").
    """
    params = model_variables(state)
    chunk_size = min(chunk_size, num_samples)
    total_bound = total_elbo = count = 0.0
    batches = list(ctx.eval_batches())
    for i, batch in enumerate(tqdm(batches, desc=f"iwae k={num_samples}", leave=False,
                                   disable=not (ctx.is_main and ctx.progress_bar))):
        ctx.check_stop()  # k=5000 on a batch takes seconds: a preemption waits for one only
        key_k, key_1 = jax.random.split(jax.random.fold_in(ctx.rng, i))
        x, mask = batch["image"], batch["example_mask"]
        bound = iwae_bound(params, x, key_k, model=ctx.model, num_samples=num_samples,
                           chunk_size=chunk_size)
        elbo = iwae_bound(params, x, key_1, model=ctx.model, num_samples=1, chunk_size=1)
        total_bound += float(jnp.sum(bound * mask))
        total_elbo += float(jnp.sum(elbo * mask))
        count += float(jnp.sum(mask))
    return {
        f"{prefix}nll_iwae{num_samples}": -total_bound / count,
        f"{prefix}elbo": total_elbo / count,
    }
