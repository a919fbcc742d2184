"""Image grids for generative models: reconstructions and prior samples, as PNG files.

Written to `workdir/plots/{reconstructions,samples}_step{N}.png` (and `*_latest.png`), by
process 0 only. Works for any model with `decode_mean(z)` in [0, 1] and either
`encode(x) -> (loc, ...)` and a `latent_size` property (a Gaussian VAE: reconstructions from
the posterior mean, samples from N(0, I)) or `posterior_mode(x)` and `sample_prior(key, n)`
(e.g. a discrete VAE, `ssl_gen.models.dvae`).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
from PIL import Image


def grid(images: np.ndarray, cols: int = 8, pad: int = 1, scale: int = 4) -> np.ndarray:
    """Tiles (N, H, W, C) images in [0, 1] into one uint8 (rows*(H+pad), cols*(W+pad), C)."""
    n, h, w, c = images.shape
    rows = -(-n // cols)
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h,
            pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    out = np.kron(out, np.ones((scale, scale, 1), np.float32))  # nearest-neighbour upscale
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def save_png(array: np.ndarray, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    img.save(path)


@functools.partial(jax.jit, static_argnames=("model",))
def _recon_and_samples(params, x, key, *, model):
    """Decoded posterior codes of x, and decoded prior samples: both (N, H, W, C) in [0, 1]."""
    if hasattr(model, "posterior_mode"):  # a latent without a mean in its own space
        code = model.apply(params, x, method=model.posterior_mode)
    else:
        code, _ = model.apply(params, x, method=model.encode)  # the posterior mean
    if hasattr(model, "sample_prior"):
        z = model.apply(params, key, x.shape[0], method=model.sample_prior)
    else:
        z = jax.random.normal(key, (x.shape[0], model.latent_size))
    return (model.apply(params, code, method=model.decode_mean),
            model.apply(params, z, method=model.decode_mean))


def evaluate(params, ctx, *, num: int = 32, levels: int | None = None) -> dict[str, float]:
    """Writes a reconstruction grid (inputs above their reconstructions) and a sample grid.

    Args:
      params: model variables. ctx: the trainer's `EvalContext`.
      num: images per grid (a multiple of 8 reads best).
      levels: the data's grey levels, to scale inputs to [0, 1] (default: the model's).
    """
    model = ctx.model
    # The first `num` eval examples, read on every host from its own copy of the eval split
    # (identical everywhere), so the jitted call below sees the same inputs on every process.
    x = np.stack([ctx.eval_source[i]["image"] for i in range(min(num, len(ctx.eval_source)))])
    recon, samples = _recon_and_samples(params, x, ctx.rng, model=model)
    # The outputs are replicated: each host reads its local copy (multi-host safe).
    recon, samples = (np.asarray(a.addressable_data(0)) for a in (recon, samples))
    if ctx.is_main:
        levels = levels or (model.num_levels if model.likelihood == "categorical" else 2)
        inputs = x.astype(np.float32) / (levels - 1)
        pairs = np.concatenate([inputs[i:i + 8] if j == 0 else recon[i:i + 8]
                                for i in range(0, len(x), 8) for j in (0, 1)])
        plots = os.path.join(ctx.workdir, "plots")
        for name, arr in (("reconstructions", pairs), ("samples", samples)):
            png = grid(arr)
            save_png(png, os.path.join(plots, f"{name}_step{ctx.step}.png"))
            save_png(png, os.path.join(plots, f"{name}_latest.png"))
    return {}
