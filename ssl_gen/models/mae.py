"""Masked autoencoder (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners").

The mechanics are those of the reference, facebookresearch/mae `models_mae.py`:
1. `patchify` the image into L patches; the encoder (a `ssl_gen.models.vit.Model` with a
   class token, under "encoder/...") embeds them and adds its position embeddings;
2. `random_masking` keeps int(L (1 - mask_ratio)) patches per example, chosen by argsort of
   uniform noise, and returns `ids_restore`, the permutation that undoes the shuffle;
3. the class token (plus its position row, zero for the sin-cos table) is prepended and only
   the kept tokens go through the encoder's blocks and final norm;
4. the decoder projects to its width, appends L - kept copies of a learned mask token,
   unshuffles them with `ids_restore`, adds its own position embeddings, runs its blocks
   (`vit.Encoder`, under "decoder/...") and predicts each patch's p*p*C pixels;
5. the loss is the mean squared error over the *masked* patches only, against raw pixels or,
   with `norm_pix_loss`, against each patch normalized by its own mean and variance.

Variance convention: the reference normalizes with `torch.var`, which by default is the
*unbiased* (n - 1) estimate; `reconstruction_loss` does the same (`ddof=1`), so its targets
and loss values are the reference's. `jnp.var`'s default (ddof=0) differs by a factor
n / (n - 1) inside the square root: 1.03x for a 4x4 grey patch, 1.0013x for 16x16 RGB.

Layouts. Images are NHWC (B, H, W, C); a patch flattens in the reference's order (row in
patch, column in patch, channel), i.e. its `einsum('nchpwq->nhwpqc')` on NCHW images, so
predictions and published decoders' `decoder_pred` weights mean the same pixels. Patches are
numbered row-major over the (H/p, W/p) grid. `mask` is 1 on removed (masked) patches.
Position embeddings are MAE's fixed 2-D sin-cos tables (`vit.posemb_sincos_2d`, "mae"
layout) in encoder and decoder, unless `posemb="learn"`.

Initialization is MAE's (`vit` weight_init "mae": xavier-uniform linears with the fused-qkv
bound, N(0, 0.02) class and mask tokens); LayerNorm eps 1e-6, exact (erf) GELU.

Entry points: `__call__(x, *, train=False, key=None, mask_ratio=0.75) -> (pred, aux)` with
pred (B, L, p*p*C) float32 and aux {"mask", "ids_restore", "latent"}; the masking key is
`key`, else the "masking" rng stream. `encode(x, key, mask_ratio)` / `decode(latent,
ids_restore)` are the two halves; `features(x)` the encoder's class token on the whole
image (the `FeatureExtractor` protocol); `patch_size` and `image_shape` are attributes.
The encoder's parameters load into a `vit.Model` of the same variant for fine-tuning
(`config.init_from` mapping {"": "encoder"}); `resize_loaded` is vit's (learned tables only).

Weights: `save(path, variables)` / `load(path)`, one safetensors file (`models/weights.py`);
`load` also reads the published MAE checkpoints (`models/pretrained.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.models import vit, weights

# Variants: the encoder (a vit variant) and the decoder. base/large/huge are the reference's
# `mae_vit_{base_patch16,large_patch16,huge_patch14}_dec512d8b` (models_mae.py): decoder
# width 512, 8 blocks, 16 heads, MLP ratio 4. "tiny" is ours, for tests and `runlocal`.
VARIANTS = {
    "base": dict(encoder="B/16", decoder_width=512, decoder_depth=8, decoder_heads=16),
    "large": dict(encoder="L/16", decoder_width=512, decoder_depth=8, decoder_heads=16),
    "huge": dict(encoder="H/14", decoder_width=512, decoder_depth=8, decoder_heads=16),
    "tiny": dict(encoder="tiny/2", decoder_width=32, decoder_depth=1, decoder_heads=2),
}


resize_loaded = vit.resize_loaded  # the `config.init_from` hook: learned tables resized


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)


def patchify(images, patch_size):
    """(B, H, W, C) -> (B, (H/p)*(W/p), p*p*C), each patch in (row, column, channel) order."""
    ph, pw = _pair(patch_size)
    b, h, w, c = images.shape
    if h % ph or w % pw:
        raise ValueError(f"mae.patchify: image {h}x{w} is not divisible by patch {ph}x{pw}")
    x = images.reshape(b, h // ph, ph, w // pw, pw, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, h, w, ph, pw, C)
    return x.reshape(b, (h // ph) * (w // pw), ph * pw * c)


def unpatchify(patches, patch_size, image_shape):
    """The inverse of `patchify`: (B, L, p*p*C) -> (B, H, W, C) for image_shape (H, W, C)."""
    ph, pw = _pair(patch_size)
    h, w, c = image_shape
    b, n, k = patches.shape
    if n != (h // ph) * (w // pw) or k != ph * pw * c:
        raise ValueError(f"mae.unpatchify: patches {patches.shape[1:]} do not tile an image "
                         f"of shape {tuple(image_shape)} with patch {ph}x{pw}")
    x = patches.reshape(b, h // ph, w // pw, ph, pw, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, h, ph, w, pw, C)
    return x.reshape(b, h, w, c)


def random_masking(key, tokens, mask_ratio: float):
    """Per-example random masking by shuffling, as the reference.

    Args:
      key: a PRNG key.
      tokens: (B, L, D).
      mask_ratio: the fraction to remove; exactly int(L * (1 - mask_ratio)) are kept.
    Returns:
      kept (B, L_keep, D): the tokens of lowest noise, in order of increasing noise;
      mask (B, L): 0 on kept, 1 on removed patches, in the original order;
      ids_restore (B, L): the inverse of the shuffle, so that
        take_along_axis(concat([kept, removed]), ids_restore) is the original order.
    """
    b, n, d = tokens.shape
    keep = int(n * (1 - mask_ratio))
    noise = jax.random.uniform(key, (b, n))
    ids_shuffle = jnp.argsort(noise, axis=1)  # ascending: small noise is kept
    ids_restore = jnp.argsort(ids_shuffle, axis=1)
    kept = jnp.take_along_axis(tokens, ids_shuffle[:, :keep, None], axis=1)
    mask = jnp.ones((b, n), jnp.float32).at[:, :keep].set(0.0)
    mask = jnp.take_along_axis(mask, ids_restore, axis=1)
    return kept, mask, ids_restore


def reconstruction_loss(images, pred, mask, patch_size, *, norm_pix_loss: bool = True,
                        ddof: int = 1, eps: float = 1e-6, example_mask=None):
    """Mean over masked patches (and examples where example_mask is 1) of the per-patch mean
    squared error. With norm_pix_loss the target patch is (t - mean) / sqrt(var + eps), var
    with `ddof` (1: the reference's unbiased torch.var). Returns a float32 scalar."""
    target = patchify(jnp.asarray(images, jnp.float32), patch_size)  # (B, L, p*p*C)
    if norm_pix_loss:
        mean = target.mean(-1, keepdims=True)
        var = target.var(-1, keepdims=True, ddof=ddof)
        target = (target - mean) / jnp.sqrt(var + eps)
    per_patch = jnp.mean((pred.astype(jnp.float32) - target) ** 2, axis=-1)  # (B, L)
    weight = mask if example_mask is None else mask * example_mask[:, None]
    return jnp.sum(per_patch * weight) / jnp.maximum(jnp.sum(weight), 1.0)


class Model(nn.Module):
    """The MAE. Fields left None come from `variant`; explicit ones win."""

    variant: str | None = "base"  # a key of VARIANTS
    image_size: int | Sequence[int] = 224
    channels: int = 3
    patch_size: int | None = None  # encoder overrides (None: the variant's)
    width: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_dim: int | None = None
    decoder_width: int | None = None
    decoder_depth: int | None = None
    decoder_heads: int | None = None
    decoder_mlp_dim: int | None = None  # None: 4 x decoder_width
    posemb: str = "sincos2d"  # encoder and decoder: "sincos2d" (fixed) | "learn"
    drop_path: float = 0.0  # encoder's stochastic depth (the reference pre-trains with none)
    layer_norm_eps: float = 1e-6  # the reference's; Hugging Face's ViTMAE config says 1e-12
    dtype: str | None = None  # as vit.Model: compute dtype, parameters float32
    remat: str | None = None
    scan: bool = False
    attention_impl: str | None = None

    def _variant(self) -> dict[str, Any]:
        if self.variant is None:
            return dict(VARIANTS["base"])
        if self.variant not in VARIANTS:
            raise ValueError(f"mae: unknown variant {self.variant!r}; known: "
                             f"{', '.join(VARIANTS)}")
        return dict(VARIANTS[self.variant])

    def _decoder_cfg(self) -> dict[str, int]:
        v = self._variant()
        width = self.decoder_width or v["decoder_width"]
        return dict(width=width, depth=self.decoder_depth or v["decoder_depth"],
                    num_heads=self.decoder_heads or v["decoder_heads"],
                    mlp_dim=self.decoder_mlp_dim or 4 * width)

    def encoder_kwargs(self) -> dict[str, Any]:
        """The `vit.Model` kwargs of the encoder (a fine-tuning config can copy them)."""
        return dict(
            variant=self._variant()["encoder"], num_classes=0, image_size=self.image_size,
            patch_size=self.patch_size, width=self.width, depth=self.depth,
            num_heads=self.num_heads, mlp_dim=self.mlp_dim, pool="cls", posemb=self.posemb,
            sincos_layout="mae", drop_path=self.drop_path, weight_init="mae",
            layer_norm_eps=self.layer_norm_eps,
            dtype=self.dtype, remat=self.remat, scan=self.scan,
            attention_impl=self.attention_impl)

    @property
    def patch(self) -> tuple[int, int]:
        """The (ph, pw) patch size."""
        return vit.Model(**self.encoder_kwargs(), parent=None).config()["patch_size"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*_pair(self.image_size), self.channels)

    def setup(self):
        dec = self._decoder_cfg()
        if dec["width"] % dec["num_heads"]:
            raise ValueError(f"mae: decoder_width {dec['width']} must be divisible by "
                             f"decoder_heads {dec['num_heads']}")
        self.encoder = vit.Model(**self.encoder_kwargs())
        (ph, pw), grid = self.patch, self.encoder.grid
        inits = vit.initializers("mae")
        self.decoder_embed = nn.Dense(dec["width"], dtype=self.dtype, kernel_init=inits["dense"])
        self.mask_token = self.param("mask_token", inits["token"], (1, 1, dec["width"]))
        if self.posemb == "learn":
            self.decoder_pos_embedding = self.param(
                "decoder_pos_embedding", inits["posemb"], (1, 1 + grid[0] * grid[1],
                                                           dec["width"]))
        self.decoder = vit.Encoder(
            depth=dec["depth"], num_heads=dec["num_heads"], mlp_dim=dec["mlp_dim"],
            scan=self.scan, remat=self.remat, dtype=self.dtype,
            attention_impl=self.attention_impl, weight_init="mae",
            layer_norm_eps=self.layer_norm_eps)
        self.decoder_pred = nn.Dense(ph * pw * self.channels, dtype=self.dtype,
                                     kernel_init=inits["dense"])

    def _check_input(self, x):
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"mae: input images have shape {tuple(x.shape[1:])} but the model "
                             f"has image_shape={self.image_shape}; set "
                             "config.model.kwargs.image_size / channels")

    def encode(self, x, key, mask_ratio: float = 0.75, *, train: bool = False):
        """(latent (B, 1 + L_keep, D), mask (B, L), ids_restore (B, L)): masking after the
        position embeddings, the encoder on the kept patches only."""
        self._check_input(x)
        tokens = self.encoder.embed(x)  # (B, L, D), position embeddings added
        kept, mask, ids_restore = random_masking(key, tokens, mask_ratio)
        return self.encoder.encode_tokens(kept, train=train), mask, ids_restore

    def decode(self, latent, ids_restore, *, train: bool = False):
        """Predicted pixels of every patch, (B, L, p*p*C) float32."""
        x = self.decoder_embed(latent)  # (B, 1 + L_keep, Dd)
        b, n_in, dd = x.shape
        n = ids_restore.shape[1]
        masks = jnp.tile(self.mask_token.astype(x.dtype), (b, n + 1 - n_in, 1))
        x_ = jnp.concatenate([x[:, 1:], masks], axis=1)  # (B, L, Dd), shuffled order
        x_ = jnp.take_along_axis(x_, ids_restore[..., None], axis=1)  # unshuffled
        x = jnp.concatenate([x[:, :1], x_], axis=1)  # (B, 1 + L, Dd)
        if self.posemb == "learn":
            table = self.decoder_pos_embedding
        else:
            grid = vit.posemb_sincos_2d(*self.encoder.grid, dd, layout="mae")
            table = jnp.concatenate([jnp.zeros((1, dd)), grid])[None]
        x = self.decoder(x + table.astype(x.dtype), train=train)
        return self.decoder_pred(x)[:, 1:].astype(jnp.float32)  # class token dropped

    def __call__(self, x, *, train: bool = False, key=None, mask_ratio: float = 0.75):
        key = self.make_rng("masking") if key is None else key
        latent, mask, ids_restore = self.encode(x, key, mask_ratio, train=train)
        pred = self.decode(latent, ids_restore, train=train)
        return pred, {"mask": mask, "ids_restore": ids_restore,
                      "latent": latent.astype(jnp.float32)}

    def features(self, x):
        """The encoder's class-token features on the unmasked image: (B, D) float32."""
        return self.encoder.features(x)


def save(path: str, variables) -> None:
    """`variables` as one safetensors file of '/'-joined keys (`ssl_gen.models.weights`)."""
    weights.save(path, variables, model="mae")


def load(path: str, *, num_heads: int | None = None, decoder_heads: int | None = None,
         with_config: bool = False):
    """The variables of a weight file, as the nested dict `Model.apply` takes.

    `path` is a file `save` wrote, or a published MAE pre-training checkpoint with its
    decoder (the MAE release's `mae_visualize_vit_*.pth`, Hugging Face's ViTMAEForPreTraining
    `model.safetensors`), read without PyTorch by `ssl_gen.models.pretrained`. `num_heads`,
    `decoder_heads`: for non-standard widths without a `config.json` beside the file.
    `with_config=True` returns `(variables, kwargs)`, the `Model` kwargs the published
    weights imply (None for ssl_gen's own files).
    """
    from ssl_gen.models import pretrained

    if pretrained.is_ssl_gen_file(path):
        variables, kwargs = weights.load(path, model="mae"), None
    else:
        variables, kwargs = pretrained.load_mae(path, num_heads=num_heads,
                                                decoder_heads=decoder_heads)
    return (variables, kwargs) if with_config else variables
