r"""VQGAN: a residual conv autoencoder with a codebook, and a PatchGAN discriminator (Esser,
Rombach & Ommer 2021, "Taming Transformers for High-Resolution Image Synthesis", Sec. 3.1).

The layout of taming-transformers' `Encoder` / `Decoder` (taming/modules/diffusionmodules/
model.py), scaled down by config:

- encoder: conv_in 3x3 (`ch`) -> for each level i of `ch_mult`: `num_res_blocks` residual
  blocks to ch * ch_mult[i] channels, then (all but the last level) a stride-2 3x3 conv with
  taming's asymmetric (0, 1) padding -> mid: residual block, self-attention block, residual
  block -> GroupNorm, swish, conv_out 3x3 to `code_dim` -> quant_conv 1x1;
- quantizer: `ssl_gen.models.quantizers` ("ema", "vq" or "fsq"), built from the flat
  quantizer fields as `ssl_gen.models.vqvae` builds it (`vqvae.make_quantizer`);
- decoder: post_quant_conv 1x1 -> conv_in 3x3 (ch * ch_mult[-1]) -> mid (res, attention,
  res) -> for each level from the last: `num_res_blocks + 1` residual blocks, then (all but
  the first level) nearest-neighbour 2x upsampling and a 3x3 conv -> GroupNorm, swish,
  conv_out 3x3 to the image channels: the *last layer* whose kernel the adaptive GAN weight
  reads (`LAST_LAYER`, the path of params/generator/decoder/conv_out/kernel);
- residual block: GroupNorm, swish, conv 3x3, GroupNorm, swish, conv 3x3, plus a 1x1
  shortcut when the width changes; attention block: GroupNorm, 1x1 q, k, v, softmax(q kᵀ /
  sqrt(C)) over the h*w positions, 1x1 projection, residual. The attention block sits at the
  lowest resolution only (taming's `attn_resolutions` at 16 for 256-pixel images).
  `norm_groups` groups (taming: 32), at most the width.

The discriminator is pix2pix's PatchGAN (Isola et al. 2017, App. 6.1.2; taming's
`NLayerDiscriminator`): a 4x4 stride-2 conv (`disc_ch`) and LeakyReLU(0.2), then
`disc_layers - 1` 4x4 stride-2 convs doubling the width (at most 8x), each followed by a norm
and LeakyReLU(0.2), one 4x4 stride-1 conv, norm, LeakyReLU, and a 4x4 stride-1 conv to one
logit per patch; every conv pads 1. Its norm is GroupNorm (`disc_norm="group"`) or none,
not taming's BatchNorm: a per-example norm keeps the discriminator free of batch statistics
(no collection to thread through its part) and makes each image's logits a function of that
image alone, which the R1 penalty's per-example input gradient assumes. It sees images in
[-1, 1] (2u - 1).

Pixels: x in `data_range` -> unit scale u in [0, 1] (as `ssl_gen.models.vqvae`); the decoder
outputs u-scale values (linear, not clipped); the objective's L1/SSIM are in those units.

Two parameter subtrees, so two objective parts can own them: `params/generator/...`
(encoder, vq, decoder, quant convs) and `params/discriminator/...`.

Entry points, the VQ-VAE's where they apply (so `ssl_gen.models.vq_prior` and
`ssl_gen.evals.codebook` use either): `encode(x) -> z_e`, `quantize(z_e, *, train, mask) ->
(z_q, aux)`, `decode(z_q)`, `decode_indices(indices)`, `codebook_size`, `latent_shape()`,
`data_range`; `discriminate(u) -> logits (B, h', w')` on unit-scale images; and
`__call__(x, *, train=False, mask=None) -> (reconstruction, aux)` (aux = the quantizer's,
plus `z_e` and `target` u). `init` through `__call__` also creates the discriminator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_gen.models import variants
from ssl_gen.models.vqvae import QuantizedAutoencoder, make_quantizer, to_unit

# The decoder's last conv kernel, the adaptive weight's W_L (ssl_gen.objectives.vqgan).
LAST_LAYER = ("params", "generator", "decoder", "conv_out", "kernel")

VARIANTS = {
    # taming-transformers' configs/imagenet_vqgan.yaml (f = 16 at 256 px): ch 128,
    # ch_mult (1, 1, 2, 2, 4), 2 residual blocks, z_channels = embed_dim = 256, K = 1024;
    # discriminator ndf 64, 3 layers.
    "taming_f16": dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, code_dim=256,
                       num_codes=1024, norm_groups=32, disc_ch=64, disc_layers=3),
    # 32x32 photo crops (experiments/vqgan.py): f = 4, an 8x8 grid of codes; 16 wide, sized
    # for minutes on two shared CPU cores (ch 32 costs 2.5x the step time).
    "photos": dict(ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, code_dim=32, num_codes=512,
                   norm_groups=8, disc_ch=16, disc_layers=2),
    # tfds cifar10 (experiments/vqgan.py:cifar10): the photos' f = 4 layout, 4x wider, 2
    # residual blocks a level, K = 1024.
    "cifar10": dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, code_dim=64, num_codes=1024,
                    norm_groups=32, disc_ch=64, disc_layers=2),
    # Unit tests and `runlocal`.
    "tiny": dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, code_dim=4, num_codes=16,
                 norm_groups=4, disc_ch=8, disc_layers=2),
}


def _norm(groups: int, width: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=math.gcd(groups, width))


class ResBlock(nn.Module):
    width: int
    groups: int

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.width, (3, 3))(nn.swish(_norm(self.groups, x.shape[-1])(x)))
        h = nn.Conv(self.width, (3, 3))(nn.swish(_norm(self.groups, self.width)(h)))
        if x.shape[-1] != self.width:
            x = nn.Conv(self.width, (1, 1), name="nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    groups: int

    @nn.compact
    def __call__(self, x):  # (B, h, w, C)
        b, h, w, c = x.shape
        y = _norm(self.groups, c)(x)
        q, k, v = (nn.Conv(c, (1, 1), name=n)(y).reshape(b, h * w, c) for n in "qkv")
        att = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k) / jnp.sqrt(c), -1)  # (B, hw, hw)
        out = jnp.einsum("bij,bjc->bic", att, v).reshape(b, h, w, c)
        return x + nn.Conv(c, (1, 1), name="proj_out")(out)


def _mid(h, groups):
    h = ResBlock(h.shape[-1], groups)(h)
    h = AttnBlock(groups)(h)
    return ResBlock(h.shape[-1], groups)(h)


class Encoder(nn.Module):
    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    code_dim: int
    groups: int

    @nn.compact
    def __call__(self, u):  # (B, H, W, C) -> (B, H / 2^(L-1), W / 2^(L-1), code_dim)
        h = nn.Conv(self.ch, (3, 3), name="conv_in")(u)
        for i, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.ch * mult, self.groups)(h)
            if i < len(self.ch_mult) - 1:  # taming's Downsample: pad (0, 1), 3x3 stride 2
                h = jnp.pad(h, ((0, 0), (0, 1), (0, 1), (0, 0)))
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), padding="VALID")(h)
        h = _mid(h, self.groups)
        h = nn.Conv(self.code_dim, (3, 3), name="conv_out")(
            nn.swish(_norm(self.groups, h.shape[-1])(h)))
        return nn.Conv(self.code_dim, (1, 1), name="quant_conv")(h)


class Decoder(nn.Module):
    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    channels: int
    groups: int

    @nn.compact
    def __call__(self, z):  # (B, h, w, D) -> (B, h 2^(L-1), w 2^(L-1), channels)
        h = nn.Conv(z.shape[-1], (1, 1), name="post_quant_conv")(z)
        h = nn.Conv(self.ch * self.ch_mult[-1], (3, 3), name="conv_in")(h)
        h = _mid(h, self.groups)
        for i in reversed(range(len(self.ch_mult))):
            for _ in range(self.num_res_blocks + 1):
                h = ResBlock(self.ch * self.ch_mult[i], self.groups)(h)
            if i > 0:  # taming's Upsample: nearest 2x, then a 3x3 conv
                b, hh, ww, c = h.shape
                h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest")
                h = nn.Conv(c, (3, 3))(h)
        h = nn.swish(_norm(self.groups, h.shape[-1])(h))
        return nn.Conv(self.channels, (3, 3), name="conv_out")(h)


class PatchDiscriminator(nn.Module):
    """PatchGAN (module docstring): (B, H, W, C) in [-1, 1] -> logits (B, h', w')."""

    ch: int = 64
    num_layers: int = 3
    norm: str = "group"
    groups: int = 32

    @nn.compact
    def __call__(self, x):
        pad = ((1, 1), (1, 1))
        act = lambda v: nn.leaky_relu(v, 0.2)
        norm = ((lambda w: _norm(self.groups, w)) if self.norm == "group"
                else (lambda w: (lambda v: v)))
        h = act(nn.Conv(self.ch, (4, 4), strides=(2, 2), padding=pad)(x))
        for n in range(1, self.num_layers):
            w = self.ch * min(2**n, 8)
            h = act(norm(w)(nn.Conv(w, (4, 4), strides=(2, 2), padding=pad,
                                    use_bias=self.norm == "none")(h)))
        w = self.ch * min(2**self.num_layers, 8)
        h = act(norm(w)(nn.Conv(w, (4, 4), padding=pad, use_bias=self.norm == "none")(h)))
        return nn.Conv(1, (4, 4), padding=pad)(h)[..., 0]


def patch_grid(size: int, num_layers: int) -> int:
    """The side of the PatchGAN's logit grid on a side of `size` pixels: each 4x4 conv with
    padding 1 maps n -> floor((n - 2) / stride) + 1."""
    for _ in range(num_layers):
        size = (size - 2) // 2 + 1
    for _ in range(2):
        size = size - 1
    return size


class Generator(nn.Module):
    """Encoder, quantizer, decoder: everything the generator part owns."""

    encoder: nn.Module
    vq: nn.Module
    decoder: nn.Module


class Model(QuantizedAutoencoder):
    """VQGAN (module docstring). Quantizer settings are flat fields, as in vqvae.Model
    (`vqvae.QuantizedAutoencoder`; 512 codes by default here)."""

    image_shape: Sequence[int] = (32, 32, 3)
    data_range: tuple[float, float] = (0.0, 255.0)
    # The architecture: None takes the variant's value ("photos" without a variant), so
    # any explicit value wins, the variant's own included (`ssl_gen.models.variants`).
    ch: int | None = None
    ch_mult: Sequence[int] | None = None
    num_res_blocks: int | None = None
    code_dim: int | None = None
    norm_groups: int | None = None
    disc_ch: int | None = None
    disc_layers: int | None = None
    disc_norm: str = "group"
    variant: str | None = None

    def _cfg(self, name):
        return variants.field(self, name, VARIANTS, "vqgan", fallback="photos")

    def setup(self):
        lo, hi = self.data_range
        if not lo < hi:
            raise ValueError(f"vqgan: data_range must be (lo, hi) with lo < hi, got "
                             f"{self.data_range!r}")
        mult = tuple(self._cfg("ch_mult"))
        if not mult or min(mult) < 1:
            raise ValueError(f"vqgan: ch_mult must be a non-empty sequence of ints >= 1, got "
                             f"{mult!r}")
        f = 2 ** (len(mult) - 1)
        h, w = self.image_shape[:2]
        if h % f or w % f:
            raise ValueError(f"vqgan: image_shape {tuple(self.image_shape)} is not divisible "
                             f"by the downsampling factor 2^(len(ch_mult) - 1) = {f}")
        if self.disc_norm not in ("group", "none"):
            raise ValueError(f"vqgan: disc_norm must be 'group' or 'none', got "
                             f"{self.disc_norm!r}")
        if patch_grid(min(h, w), self._cfg("disc_layers")) < 1:
            raise ValueError(f"vqgan: disc_layers={self._cfg('disc_layers')} leaves no patch "
                             f"logits on {h}x{w} images; use fewer layers")
        arch = dict(ch=self._cfg("ch"), ch_mult=mult, num_res_blocks=self._cfg("num_res_blocks"),
                    groups=self._cfg("norm_groups"))
        self.generator = Generator(
            encoder=Encoder(**arch, code_dim=self._cfg("code_dim")),
            vq=make_quantizer(self, "vqgan", self._cfg("num_codes")),
            decoder=Decoder(**arch, channels=self.image_shape[-1]))
        self.discriminator = PatchDiscriminator(
            ch=self._cfg("disc_ch"), num_layers=self._cfg("disc_layers"), norm=self.disc_norm,
            groups=self._cfg("norm_groups"))

    def _quantizer(self):
        return self.generator.vq

    def latent_shape(self) -> tuple[int, int]:
        f = 2 ** (len(self._cfg("ch_mult")) - 1)
        return (self.image_shape[0] // f, self.image_shape[1] // f)

    def encode(self, x):
        """z_e (B, h, w, code_dim) of images x in data_range."""
        return self.generator.encoder(to_unit(x, self.data_range))

    def decode(self, z_q):
        """The reconstruction in unit scale, (B, H, W, C) (linear output, not clipped)."""
        return self.generator.decoder(z_q)

    def decode_indices(self, indices):
        """The reconstruction from code indices (B, h, w)."""
        return self.generator.decoder(self.generator.vq.codes(indices))

    def discriminate(self, u):
        """PatchGAN logits (B, h', w') of unit-scale images u (B, H, W, C)."""
        return self.discriminator(2.0 * u - 1.0)

    def __call__(self, x, *, train: bool = False, mask=None):
        z_e = self.encode(x)
        z_q, aux = self.quantize(z_e, train=train, mask=mask)
        x_hat = self.decode(z_q)
        if self.is_initializing():  # create the discriminator's parameters too
            self.discriminate(x_hat)
        return x_hat, {**aux, "z_e": z_e, "target": to_unit(x, self.data_range)}
