r"""The VQ-VAE objective: reconstruction MSE plus the quantizer's loss (one part).

loss = mean_b ||x̂_b - u_b||² / (H W C) + vq_loss, with u the images mapped to [0, 1]
(`ssl_gen.models.vqvae.to_unit`: the MSE is in those units, so 0.017 on the digits is a
mean squared error of 0.017 on a 0..1 grey scale) and vq_loss the quantizer's `loss`:
codebook + beta * commitment for "vq", beta * commitment for "ema" (its codebook moves by
EMA), 0 for "fsq" (van den Oord et al. 2017, eq. 3; `ssl_gen.models.quantizers`).

The EMA statistics are the model's collection `"vq_stats"` (`state["collections"]`): the
loss applies the model with those collections mutable and returns the new values as
`aux["collections"]`, which the train step stores (they never reach an optimizer). The
quantizer's rng stream "vq" (restart draws, k-means) is the step's rng, so a resumed run
draws the same.

Metrics: `recon_mse`, `vq_loss`, `commitment`, `codebook_loss`, and this batch's usage:
`perplexity`, `codes_used`, plus the EMA quantizer's `dead_fraction` (codes whose debiased
EMA count is below `dead_threshold`). Whole-split usage is `ssl_gen.evals.codebook`'s.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ssl_gen.models.quantizers import RNG
from ssl_gen.objectives.elbo import masked_mean

METRICS = ("commitment", "codebook_loss", "perplexity", "codes_used", "dead_fraction",
           "entropy")


def reconstruction_mse(x_hat: jax.Array, target: jax.Array) -> jax.Array:
    """Per-example mean squared error over the pixels: (B,)."""
    return jnp.mean((x_hat - target).reshape(x_hat.shape[0], -1) ** 2, -1)


def loss_fn(params, batch, rng, *, model, collections, input_key: str = "image"
            ) -> tuple[jax.Array, dict[str, Any]]:
    """Reconstruction MSE (unit scale) + the quantizer's loss; see the module docstring."""
    if not isinstance(input_key, str):
        raise ValueError(f"vqvae: input_key must be a batch field name, got {input_key!r}")
    x = batch[input_key]
    mask = batch.get("example_mask")
    mutable = list(collections)
    out = model.apply({**params, **collections}, x, train=True, mask=mask, rngs={RNG: rng},
                      mutable=mutable or False)
    (x_hat, aux), new = out if mutable else (out, {})
    recon = masked_mean(reconstruction_mse(x_hat, aux["target"]), mask)
    loss = recon + aux["loss"]
    metrics = {"recon_mse": recon, "vq_loss": aux["loss"],
               **{k: aux[k] for k in METRICS if k in aux}}
    return loss, {**metrics, "collections": {k: new[k] for k in collections}}
