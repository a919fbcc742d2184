"""The MAE objective (He et al. 2022): reconstruct the masked patches' pixels.

One part (`loss_fn`) owning every parameter of `ssl_gen.models.mae.Model`. The step's `rng`
splits into the masking key (passed to the model as `key`) and the "dropout" stream (used by
stochastic depth / dropout when configured). The loss is `mae.reconstruction_loss`: mean
squared error over the masked patches only, per-patch normalized targets with
`norm_pix_loss` (unbiased variance, as the reference); padded examples (`example_mask` 0)
count for nothing.

Metrics: `loss_visible`, the same error on the visible patches (not optimized; it shows how
much of the decoder's capacity goes into copying what the encoder saw), and `mask_fraction`,
the fraction of patches masked (int(L (1 - r)) kept, so slightly above r when L r is not an
integer).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ssl_gen.models import mae


def _check(mask_ratio, input_key) -> None:
    if not (isinstance(mask_ratio, (int, float)) and 0 <= mask_ratio < 1):
        raise ValueError(f"mae: mask_ratio must be a number in [0, 1), got {mask_ratio!r}")
    if not isinstance(input_key, str):
        raise ValueError(f"mae: input_key must be a batch field name, got {input_key!r}")


def loss_fn(params, batch, rng, *, model, mask_ratio: float = 0.75, norm_pix_loss: bool = True,
            input_key: str = "image") -> tuple[jax.Array, dict[str, Any]]:
    """The masked-patch reconstruction loss of `model` on `batch[input_key]` (B, H, W, C)."""
    _check(mask_ratio, input_key)
    x = batch[input_key]
    example_mask = batch.get("example_mask")
    mask_key, dropout_key = jax.random.split(rng)
    pred, aux = model.apply(params, x, train=True, key=mask_key, mask_ratio=mask_ratio,
                            rngs={"dropout": dropout_key})
    mask = aux["mask"]
    loss = mae.reconstruction_loss(x, pred, mask, model.patch, norm_pix_loss=norm_pix_loss,
                                   example_mask=example_mask)
    visible = mae.reconstruction_loss(x, jax.lax.stop_gradient(pred), 1.0 - mask, model.patch,
                                      norm_pix_loss=norm_pix_loss, example_mask=example_mask)
    return loss, {"loss_visible": visible, "mask_fraction": jnp.mean(mask)}
