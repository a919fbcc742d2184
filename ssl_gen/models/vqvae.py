r"""VQ-VAE: a conv encoder, a quantizer, a conv decoder (van den Oord et al. 2017).

x (B, H, W, C) in `data_range` -> unit scale u = (x - lo) / (hi - lo) in [0, 1] -> encoder
(`num_downsamples` 4x4 stride-2 convs, a 3x3 conv, residual blocks, a 1x1 conv to
`code_dim`) -> z_e (B, H/2^n, W/2^n, code_dim) -> quantizer (`ssl_gen.models.quantizers`:
"ema", "vq" or "fsq") -> z_q -> decoder (3x3 conv, residual blocks, 4x4 stride-2 transposed
convs) -> the reconstruction in unit scale (linear output; the objective's MSE is in these
[0, 1] units). A residual block is x + conv1x1(relu(conv3x3(relu(x)))) (Sec. 4.1), and
the stack ends with a ReLU.

Entry points: `encode(x) -> z_e`, `quantize(z_e, *, train) -> (z_q, aux)`, `decode(z_q) ->
reconstruction`, `decode_indices(indices)`, and `__call__(x, *, train=False, mask=None) ->
(reconstruction, aux)`, aux = the quantizer's aux (`indices`, `loss`, usage) plus `z_e`
and `target` (u). Training applies it with `mutable=["vq_stats"]` for the EMA quantizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ssl_gen.models import variants
from ssl_gen.models.quantizers import QUANTIZERS

VARIANTS = {
    # van den Oord et al. (2017), Sec. 4.1: 2 stride-2 4x4 convs, 2 residual blocks, 256
    # hidden units throughout, K = 512 (Sec. 4.2), beta = 0.25 (Sec. 3.2); D = 64 follows
    # Sonnet's VQ-VAE example (the paper does not state D for CIFAR-10).
    "oord17": dict(hidden=256, res_hidden=256, num_res_blocks=2, num_downsamples=2,
                   code_dim=64, num_codes=512),
    # Sonnet's examples/vqvae_example.ipynb (CIFAR-10): 128 hidden, 32 in the residual
    # branch, 2 blocks, D = 64, K = 512, EMA decay 0.99.
    "sonnet": dict(hidden=128, res_hidden=32, num_res_blocks=2, num_downsamples=2,
                   code_dim=64, num_codes=512),
    # 8x8 digits: one downsample (a 4x4 grid of codes per digit), K = 256.
    "digits": dict(hidden=64, res_hidden=32, num_res_blocks=2, num_downsamples=1,
                   code_dim=16, num_codes=256),
    # Unit tests and `runlocal`.
    "tiny": dict(hidden=8, res_hidden=4, num_res_blocks=1, num_downsamples=1, code_dim=4,
                 num_codes=16),
}


def to_unit(x, data_range: tuple[float, float]):
    """x in data_range -> [0, 1] (float32)."""
    lo, hi = data_range
    return (jnp.asarray(x, jnp.float32) - lo) / (hi - lo)


def make_quantizer(m, model: str, num_codes: int) -> nn.Module:
    """The quantizer `QUANTIZERS[m.quantizer]` from the flat quantizer fields of model module
    `m` (`quantizer`, `beta`, `decay`, `restart`, ...; those it does not take are ignored);
    a one-line ValueError for a bad combination. Shared by vqvae and vqgan."""
    if m.quantizer not in QUANTIZERS:
        raise ValueError(f"{model}: quantizer must be one of {', '.join(QUANTIZERS)}, got "
                         f"{m.quantizer!r}")
    if m.quantizer == "fsq":
        return QUANTIZERS["fsq"](levels=tuple(m.fsq_levels))
    kw = dict(num_codes=num_codes, beta=m.beta, lookup_dim=m.lookup_dim,
              l2_normalize=m.l2_normalize, entropy_weight=m.entropy_weight)
    if m.quantizer == "ema":
        kw.update(decay=m.decay, restart=m.restart, dead_threshold=m.dead_threshold,
                  kmeans_init=m.kmeans_init)
    elif m.restart or m.kmeans_init:
        raise ValueError(f"{model}: restart and kmeans_init change the codebook outside the "
                         "optimizer, so they need quantizer='ema' (the 'vq' codebook is a "
                         "parameter)")
    return QUANTIZERS[m.quantizer](**kw)


class _Residual(nn.Module):
    hidden: int
    res_hidden: int
    num_blocks: int

    @nn.compact
    def __call__(self, h):
        for _ in range(self.num_blocks):
            r = nn.Conv(self.res_hidden, (3, 3))(nn.relu(h))
            h = h + nn.Conv(self.hidden, (1, 1))(nn.relu(r))
        return nn.relu(h)


class Encoder(nn.Module):
    hidden: int
    res_hidden: int
    num_res_blocks: int
    num_downsamples: int
    code_dim: int

    @nn.compact
    def __call__(self, u):  # (B, H, W, C) -> (B, H / 2^n, W / 2^n, code_dim)
        h = u
        for i in range(self.num_downsamples):
            width = self.hidden // 2 if i < self.num_downsamples - 1 else self.hidden
            h = nn.relu(nn.Conv(width, (4, 4), strides=(2, 2))(h))
        h = nn.Conv(self.hidden, (3, 3))(h)
        h = _Residual(self.hidden, self.res_hidden, self.num_res_blocks)(h)
        return nn.Conv(self.code_dim, (1, 1))(h)


class Decoder(nn.Module):
    hidden: int
    res_hidden: int
    num_res_blocks: int
    num_upsamples: int
    channels: int

    @nn.compact
    def __call__(self, z):  # (B, h, w, D) -> (B, h 2^n, w 2^n, channels)
        h = nn.Conv(self.hidden, (3, 3))(z)
        h = _Residual(self.hidden, self.res_hidden, self.num_res_blocks)(h)
        for i in range(self.num_upsamples):
            last = i == self.num_upsamples - 1
            width = self.channels if last else self.hidden // 2
            h = nn.ConvTranspose(width, (4, 4), strides=(2, 2))(h)
            h = h if last else nn.relu(h)
        return h


class QuantizedAutoencoder(nn.Module):
    """What vqvae.Model and vqgan.Model share: the flat quantizer fields `make_quantizer`
    reads, the codebook size, and `quantize`. Subclasses define `_cfg(name)` (the variant's
    value of a field) and `_quantizer()` (their quantizer submodule)."""

    quantizer: str = "ema"
    num_codes: int | None = None  # None: the variant's (256 in vqvae, 512 in vqgan)
    beta: float = 0.25
    decay: float = 0.99
    restart: bool = False
    dead_threshold: float = 1.0
    kmeans_init: bool = False
    lookup_dim: int | None = None
    l2_normalize: bool = False
    entropy_weight: float = 0.0
    fsq_levels: Sequence[int] = (8, 5, 5, 5)

    @property
    def codebook_size(self) -> int:
        if self.quantizer == "fsq":
            return math.prod(self.fsq_levels)
        return self._cfg("num_codes")

    def quantize(self, z_e, *, train: bool = False, mask=None):
        """(z_q, aux): the quantizer on z_e; mask (B,) weights the examples."""
        if mask is not None:
            mask = jnp.broadcast_to(mask[:, None, None], z_e.shape[:-1])
        return self._quantizer()(z_e, train=train, mask=mask)


class Model(QuantizedAutoencoder):
    """VQ-VAE (module docstring). Quantizer settings are flat fields, passed on to
    `quantizers.QUANTIZERS[quantizer]` (those that quantizer does not take are ignored)."""

    image_shape: Sequence[int] = (8, 8, 1)
    data_range: tuple[float, float] = (0.0, 16.0)
    # The architecture: None takes the variant's value ("digits" without a variant), so
    # any explicit value wins, the variant's own included (`ssl_gen.models.variants`).
    hidden: int | None = None
    res_hidden: int | None = None
    num_res_blocks: int | None = None
    num_downsamples: int | None = None
    code_dim: int | None = None
    variant: str | None = None

    def _cfg(self, name):
        return variants.field(self, name, VARIANTS, "vqvae", fallback="digits")

    def setup(self):
        lo, hi = self.data_range
        if not lo < hi:
            raise ValueError(f"vqvae: data_range must be (lo, hi) with lo < hi, got "
                             f"{self.data_range!r}")
        n = self._cfg("num_downsamples")
        h, w = self.image_shape[:2]
        if h % 2**n or w % 2**n:
            raise ValueError(f"vqvae: image_shape {tuple(self.image_shape)} is not divisible "
                             f"by 2^num_downsamples = {2**n}")
        arch = dict(hidden=self._cfg("hidden"), res_hidden=self._cfg("res_hidden"),
                    num_res_blocks=self._cfg("num_res_blocks"))
        self.encoder = Encoder(**arch, num_downsamples=n, code_dim=self._cfg("code_dim"))
        self.decoder = Decoder(**arch, num_upsamples=n, channels=self.image_shape[-1])
        self.vq = make_quantizer(self, "vqvae", self._cfg("num_codes"))

    def _quantizer(self):
        return self.vq

    def latent_shape(self) -> tuple[int, int]:
        n = 2 ** self._cfg("num_downsamples")
        return (self.image_shape[0] // n, self.image_shape[1] // n)

    def encode(self, x):
        """z_e (B, h, w, code_dim) of images x in data_range."""
        return self.encoder(to_unit(x, self.data_range))

    def decode(self, z_q):
        """The reconstruction in unit scale [0, 1], (B, H, W, C)."""
        return self.decoder(z_q)

    def decode_indices(self, indices):
        """The reconstruction from code indices (B, h, w)."""
        return self.decoder(self.vq.codes(indices))

    def __call__(self, x, *, train: bool = False, mask=None):
        z_e = self.encode(x)
        z_q, aux = self.quantize(z_e, train=train, mask=mask)
        return self.decode(z_q), {**aux, "z_e": z_e, "target": to_unit(x, self.data_range)}
