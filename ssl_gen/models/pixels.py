"""Pixel likelihoods shared by the image VAEs: a categorical over grey levels, or a Bernoulli.

Inputs `x` hold integer levels (B, H, W, C); decoders emit flat logits that `pixel_logits`
shapes to (B, H, W, C, L) (categorical) or (B, H, W, C) (Bernoulli).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LIKELIHOODS = ("categorical", "bernoulli")


def pixel_logits(out, image_shape, likelihood: str, num_levels: int):
    """Flat decoder output (B, H*W*C*L or H*W*C) -> per-pixel logits."""
    h, w, c = image_shape
    if likelihood == "categorical":
        return out.reshape(out.shape[0], h, w, c, num_levels)
    return out.reshape(out.shape[0], h, w, c)


def log_likelihood(logits, x, likelihood: str):
    """log p(x | logits) summed over pixels: (B,)."""
    if likelihood == "categorical":
        logp = jax.nn.log_softmax(logits, axis=-1)
        ll = jnp.take_along_axis(logp, x.astype(jnp.int32)[..., None], axis=-1)[..., 0]
    else:
        xf = x.astype(logits.dtype)
        ll = xf * logits - jax.nn.softplus(logits)  # log Bernoulli(x; sigmoid(logits))
    return ll.reshape(ll.shape[0], -1).sum(-1)


def mean(logits, likelihood: str, num_levels: int):
    """The expected pixel value, scaled to [0, 1]: (B, H, W, C)."""
    if likelihood == "categorical":
        levels = jnp.arange(num_levels, dtype=logits.dtype) / (num_levels - 1)
        return jnp.sum(jax.nn.softmax(logits, axis=-1) * levels, axis=-1)
    return jax.nn.sigmoid(logits)
