"""MAE reconstruction grids: original, masked input, reconstruction, reconstruction + visible.

For the first `num` eval images and a fixed masking key (the same patches masked at every
step, so the grids of a run compare), the model (`ssl_gen.models.mae.Model`) predicts every
patch. With `norm_pix_loss` the predictions are in each patch's normalized units; they are
mapped back with the original patch's mean and (unbiased, as the loss) variance, as MAE's
visualization notebook does. Each group of rows shows:

- `original`: the input;
- `masked`: the visible patches, masked ones filled with grey (0.5 after scaling);
- `reconstruction`: the prediction on every patch (the visible ones are not trained);
- `+ visible`: the visible patches of the input pasted over the prediction.

Pixels are scaled to [0, 1] by the originals' range (or `value_range`). Written by the main
process to `plots/mae_reconstructions_step<N>.png` (and `_latest.png`), and as the
TensorBoard image `images/mae_reconstructions` (`ssl_gen.evals.images`).

Returns the figure's loss, `mae_eval_loss` (the masked-patch reconstruction loss on these
images, with the objective's `norm_pix_loss`), and `mae_eval_loss_visible`.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.evals import images
from ssl_gen.evals.context import model_variables
from ssl_gen.models import mae

MASK_SEED = 1234  # the fixed masking key of the figures


@functools.partial(jax.jit, static_argnames=("model", "mask_ratio"))
def _predict(variables, x, key, *, model, mask_ratio):
    pred, aux = model.apply(variables, x, key=key, mask_ratio=mask_ratio)
    return pred, aux["mask"]


def reconstruct(model, variables, x, *, mask_ratio: float = 0.75, norm_pix_loss: bool = True,
                key=None, eps: float = 1e-6):
    """(reconstruction (B, H, W, C) in the input's units, mask (B, L), predictions (B, L, K))
    of images x under a masking `key` (default: the fixed MASK_SEED key)."""
    key = jax.random.key(MASK_SEED) if key is None else key
    x = jnp.asarray(x, jnp.float32)
    pred, mask = _predict(variables, x, key, model=model, mask_ratio=float(mask_ratio))
    patches = mae.patchify(x, model.patch)
    if norm_pix_loss:  # back from per-patch normalized units, as the loss's targets
        mean = patches.mean(-1, keepdims=True)
        var = patches.var(-1, keepdims=True, ddof=1)
        recon = pred * jnp.sqrt(var + eps) + mean
    else:
        recon = pred
    return mae.unpatchify(recon, model.patch, x.shape[1:]), mask, pred


def _pixel_mask(mask, patch, image_shape):
    """(B, L) patch mask -> (B, H, W, 1), 1 on masked pixels."""
    ph, pw = patch
    k = ph * pw * image_shape[-1]
    full = jnp.repeat(mask[..., None], k, axis=-1)
    return mae.unpatchify(full, patch, image_shape)[..., :1]


def evaluate(state, ctx, *, num: int = 16, mask_ratio: float = 0.75,
             norm_pix_loss: bool = True, field: str = "image",
             value_range: tuple[float, float] | None = None,
             tensorboard: bool = True) -> dict[str, float]:
    """Writes the reconstruction figure (module docstring); returns its masked loss.

    Args:
      state: the train state. ctx: the trainer's `EvalContext`.
      num: images in the figure (8 per row).
      mask_ratio, norm_pix_loss: as the objective's (`ssl_gen.objectives.mae`).
      field: the image field.
      value_range: (lo, hi) of the pixels for display; None: the originals' min and max.
      tensorboard: also write the figure as a TensorBoard image.
    """
    model = ctx.model
    if not isinstance(model, mae.Model):
        raise TypeError(f"mae_images: {type(model).__name__} is not an "
                        "ssl_gen.models.mae.Model (it draws masked reconstructions)")
    variables = model_variables(state)
    n = min(num, len(ctx.eval_source))
    x = np.stack([np.asarray(ctx.eval_source[i][field], np.float32) for i in range(n)])
    recon, mask, pred = reconstruct(model, variables, x, mask_ratio=mask_ratio,
                                    norm_pix_loss=norm_pix_loss)
    loss = mae.reconstruction_loss(x, pred, mask, model.patch, norm_pix_loss=norm_pix_loss)
    loss_visible = mae.reconstruction_loss(x, pred, 1.0 - mask, model.patch,
                                           norm_pix_loss=norm_pix_loss)
    out = {"mae_eval_loss": float(loss), "mae_eval_loss_visible": float(loss_visible)}
    if not (ctx.is_main and ctx.workdir):
        return out
    m = np.asarray(_pixel_mask(mask, model.patch, x.shape[1:]))
    recon = np.asarray(recon)
    lo, hi = value_range if value_range is not None else (float(x.min()), float(x.max()))
    unit = lambda a: np.clip((a - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    orig = unit(x)
    masked = np.where(m > 0, 0.5, orig)
    rec = unit(recon)
    pasted = np.where(m > 0, rec, orig)
    blocks = []
    for i in range(0, n, images.COLS):
        s = slice(i, i + images.COLS)
        blocks += [("original", orig[s]), ("masked", masked[s]), ("reconstruction", rec[s]),
                   ("+ visible", pasted[s])]
    title = (f"MAE reconstructions ({mask_ratio:.0%} masked): "
             f"{images.run_name(ctx.workdir)}, step {ctx.step}")
    png = images.figure(blocks, title, group=4)
    plots = os.path.join(ctx.workdir, "plots")
    images.save_png(png, os.path.join(plots, f"mae_reconstructions_step{ctx.step}.png"))
    images.save_png(png, os.path.join(plots, "mae_reconstructions_latest.png"))
    if tensorboard:
        images.write_tensorboard(os.path.join(ctx.workdir, "tensorboard", "images"), ctx.step,
                                 {"mae_reconstructions": png})
    return out
