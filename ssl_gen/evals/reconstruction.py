r"""Reconstruction quality of an autoencoder on the whole eval split: MSE, PSNR, SSIM, a grid.

For a model whose `__call__(x, *, train=False, mask=None)` returns (reconstruction in unit
scale, aux with `target`, the input in unit scale) (`ssl_gen.models.vqvae`,
`ssl_gen.models.vqgan`), over every real example of the eval split (`example_mask`), with
the reconstruction clipped to [0, 1] (what a picture of it shows):

- `mse_clipped`: mean squared error per pixel of the clipped reconstruction, unit scale
  (`ssl_gen.evals.codebook`'s `mse` is the unclipped one; the names differ so that both
  evals can share a run's eval rows);
- `psnr`: the mean over images of 10 log10(1 / MSE_image) dB (peak 1: unit scale);
- `ssim`: the mean over images of SSIM (`ssl_gen.models.perceptual.ssim`: Wang et al. 2004,
  11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 1); only for images of at
  least 11x11 pixels;
- `gradient_ratio`: the reconstructions' edge energy over the data's, sum |∇x̂| / sum |∇x|
  over the split (forward differences along height and width, all channels): 1 is the
  data's sharpness, a blurred reconstruction scores below 1, added noise or invented
  texture above. Pixel metrics reward blur (the mean of plausible images minimizes MSE), so
  this is the number that shows what an adversarial term buys. A ratio of sums, not a mean
  of per-image ratios: flat crops (sky) have almost no edges and would dominate the mean.

Codebook usage is `ssl_gen.evals.codebook`'s. The main process writes the first `num` eval
images above their reconstructions to `plots/reconstructions_step<N>.png` (and
`_latest.png`) and the TensorBoard image `images/reconstructions` (`ssl_gen.evals.images`).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.evals import images
from ssl_gen.evals.context import model_variables
from ssl_gen.models import perceptual


@functools.partial(jax.jit, static_argnames=("model",))
def _reconstruct(model, variables, x, mask):
    """(clipped reconstruction, unit-scale target) of a batch: both (B, H, W, C)."""
    x_hat, aux = model.apply(variables, x, train=False, mask=mask)
    return jnp.clip(x_hat, 0.0, 1.0), aux["target"]


@jax.jit
def _batch_sums(x_hat, u, mask):
    mse = jnp.mean((x_hat - u).reshape(u.shape[0], -1) ** 2, -1)  # (B,)
    psnr = -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))
    out = {"mse_clipped": mse, "psnr": psnr}
    if min(u.shape[1:3]) >= perceptual.WINDOW:
        out["ssim"] = perceptual.ssim(x_hat, u)
    out["edges_reconstruction"], out["edges_data"] = _edges(x_hat), _edges(u)
    return {k: jnp.sum(v * mask) for k, v in out.items()}


def _edges(x):
    """Per image, sum of |forward differences| along height and width, (B,)."""
    dy = jnp.abs(x[:, 1:] - x[:, :-1]).reshape(x.shape[0], -1).sum(-1)
    dx = jnp.abs(x[:, :, 1:] - x[:, :, :-1]).reshape(x.shape[0], -1).sum(-1)
    return dy + dx


def evaluate(state, ctx, *, field: str = "image", prefix: str = "", num: int = 16,
             grid: bool = True, tensorboard: bool = True) -> dict[str, float]:
    """MSE, PSNR, SSIM and the gradient ratio over the eval split; writes the grid.

    Args:
      state: the train state. ctx: the trainer's `EvalContext`.
      field: the batch field holding the images.
      prefix: prepended to metric names.
      num: images in the figure (8 per row).
      grid: write the figure.
      tensorboard: also write it as a TensorBoard image.
    """
    model, variables = ctx.model, model_variables(state)
    sums, n = {}, 0.0
    for batch in ctx.eval_batches():
        mask = batch["example_mask"]
        x_hat, u = _reconstruct(model, variables, batch[field], mask)
        # Read on the host each batch: accumulating on the devices instead (one read at the
        # end) left eager all-reduces queued behind the next batch's, and on the 8-device
        # CPU backend of the tests two of eight threads missed the rendezvous (XLA abort).
        for k, v in _batch_sums(x_hat, u, mask).items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += float(jnp.sum(mask))
    if n == 0:
        raise ValueError("reconstruction: the eval split is empty")
    edges, data_edges = sums.pop("edges_reconstruction"), sums.pop("edges_data")
    out = {f"{prefix}{k}": v / n for k, v in sums.items()}
    out[f"{prefix}gradient_ratio"] = edges / data_edges if data_edges > 0 else float("nan")
    if grid:
        x = np.stack([ctx.eval_source[i][field] for i in range(min(num, len(ctx.eval_source)))])
        x_hat, u = _reconstruct(model, variables, x, jnp.ones((len(x),), jnp.float32))
        x_hat, u = (np.asarray(a.addressable_data(0)) for a in (x_hat, u))
        if ctx.is_main:
            cols = images.COLS
            blocks = [b for i in range(0, len(x), cols)
                      for b in (("data", u[i:i + cols]), ("reconstruction", x_hat[i:i + cols]))]
            title = f"reconstructions: {images.run_name(ctx.workdir)}, step {ctx.step}"
            png = images.figure(blocks, title, group=2)
            plots = os.path.join(ctx.workdir, "plots")
            images.save_png(png, os.path.join(plots, f"reconstructions_step{ctx.step}.png"))
            images.save_png(png, os.path.join(plots, "reconstructions_latest.png"))
            if tensorboard:
                images.write_tensorboard(os.path.join(ctx.workdir, "tensorboard", "images"),
                                         ctx.step, {"reconstructions": png})
    return out
