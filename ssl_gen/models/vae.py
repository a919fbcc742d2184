"""The Gaussian VAE (Kingma & Welling 2014; Rezende et al. 2014) for small images.

Encoder q(z|x) = N(loc(x), diag(scale(x)^2)); prior p(z) = N(0, I); decoder p(x|z) is a
product over pixels of either
- a categorical over `num_levels` grey levels ("categorical"; `digits` has 17 levels), or
- a Bernoulli ("bernoulli"; binarized images).

The encoder and decoder are MLPs or small conv nets. Entry points (this module uses `setup`
because it has several): `encode(x) -> (loc, scale)`, `decode(z) -> logits`,
`log_likelihood(z, x) -> log p(x|z)` per example, `decode_mean(z)` (expected grey level in
[0, 1], for image grids), and `__call__(x, *, train=False) -> (logits, aux)`, which decodes
the posterior mean (train=False) or one posterior sample (train=True, rng stream "sample").

Input `x` holds integer levels (uint8 0 .. num_levels-1), shape (B, H, W, C).

Weights: `save(path, variables)` / `load(path)`, one safetensors file with
'/'-joined keys (`ssl_gen.models.weights`), which `config.init_from` reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_gen.models import pixels, weights

# Named variants: (hidden widths, latent size), with where each comes from.
VARIANTS = {
    # Kingma & Welling (2014), "Auto-Encoding Variational Bayes", MNIST: one hidden layer
    # of 500 units, 20 latents.
    "kw14": dict(hidden=(500,), latent_dim=20),
    # Burda et al. (2016), "Importance Weighted Autoencoders", one stochastic layer:
    # two deterministic layers of 200, 50 latents.
    "iwae1": dict(hidden=(200, 200), latent_dim=50),
    # Small enough for unit tests and `runlocal`.
    "tiny": dict(hidden=(32,), latent_dim=4),
}

LIKELIHOODS = pixels.LIKELIHOODS
ARCHS = ("mlp", "conv")


class _MLP(nn.Module):
    widths: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, h):
        for w in self.widths:
            h = nn.gelu(nn.Dense(w)(h))
        return nn.Dense(self.out)(h)


class _ConvEncoder(nn.Module):
    """Stride-2 convs then a dense head: (B, H, W, C) -> (B, out)."""

    channels: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, x):
        h = x
        for c in self.channels:
            h = nn.gelu(nn.Conv(c, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = h.reshape(h.shape[0], -1)  # (B, H' * W' * C')
        return nn.Dense(self.out)(h)


class _ConvDecoder(nn.Module):
    """Dense to a (H / 2^n, W / 2^n) map, then stride-2 transposed convs up to (H, W)."""

    channels: Sequence[int]
    image_hw: tuple[int, int]
    out_channels: int

    @nn.compact
    def __call__(self, z):
        n = len(self.channels)
        h0, w0 = self.image_hw[0] >> n, self.image_hw[1] >> n
        h = nn.gelu(nn.Dense(h0 * w0 * self.channels[-1])(z))
        h = h.reshape(z.shape[0], h0, w0, self.channels[-1])  # (B, h0, w0, C)
        for c in reversed(self.channels):
            h = nn.gelu(nn.ConvTranspose(c, (3, 3), strides=(2, 2), padding="SAME")(h))
        return nn.Conv(self.out_channels, (3, 3), padding="SAME")(h)  # (B, H, W, out)


def decode_variant(variant: str | None, hidden, latent_dim) -> tuple[tuple[int, ...], int]:
    """(hidden, latent_dim) for a named variant, or the explicit values when variant is None."""
    if variant is None:
        return tuple(hidden), latent_dim
    if variant not in VARIANTS:
        raise ValueError(f"vae: unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    v = VARIANTS[variant]
    return tuple(v["hidden"]), v["latent_dim"]


class Model(nn.Module):
    """Gaussian VAE. See the module docstring for the entry points and shapes."""

    image_shape: tuple[int, int, int] = (8, 8, 1)  # (H, W, C) of the data
    likelihood: str = "categorical"  # "categorical" over num_levels, or "bernoulli"
    num_levels: int = 17  # grey levels per pixel (categorical only)
    arch: str = "mlp"  # "mlp" or "conv"
    hidden: Sequence[int] = (256, 256)  # MLP widths, or conv channels for arch="conv"
    latent_dim: int = 16
    variant: str | None = None  # a key of VARIANTS; overrides hidden / latent_dim
    min_scale: float = 1e-4  # floor on the posterior scale, for stability

    def setup(self):
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(
                f"vae: likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"vae: arch must be one of {ARCHS}, got {self.arch!r}")
        hidden, latent = decode_variant(self.variant, self.hidden, self.latent_dim)
        if latent < 1 or any(w < 1 for w in hidden):
            raise ValueError(
                f"vae: latent_dim and hidden widths must be >= 1, got {latent}, {hidden}")
        if self.likelihood == "categorical" and self.num_levels < 2:
            raise ValueError(f"vae: num_levels must be >= 2, got {self.num_levels}")
        h, w, c = self.image_shape
        self._latent = latent
        self._per_pixel = self.num_levels if self.likelihood == "categorical" else 1
        if self.arch == "mlp":
            self.encoder = _MLP(hidden, 2 * latent)
            self.decoder = _MLP(tuple(reversed(hidden)), h * w * c * self._per_pixel)
        else:
            n = len(hidden)
            if h % (1 << n) or w % (1 << n):
                raise ValueError(
                    f"vae: conv arch with {n} stride-2 layers needs H and W divisible by "
                    f"{1 << n}, got image_shape={self.image_shape}; use fewer channels"
                )
            self.encoder = _ConvEncoder(hidden, 2 * latent)
            self.decoder = _ConvDecoder(hidden, (h, w), c * self._per_pixel)

    def _check_input(self, x):
        if tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ValueError(
                f"vae: input images have shape {tuple(x.shape[1:])} but the model has "
                f"image_shape={tuple(self.image_shape)}; set config.model.kwargs.image_shape"
            )

    def _scaled(self, x):
        levels = self.num_levels if self.likelihood == "categorical" else 2
        x = x.astype(jnp.float32) / (levels - 1)  # levels -> [0, 1]
        return x.reshape(x.shape[0], -1) if self.arch == "mlp" else x

    def encode(self, x):
        """q(z|x): returns (loc, scale), each (B, latent_dim)."""
        self._check_input(x)
        out = self.encoder(self._scaled(x))
        loc, pre_scale = jnp.split(out, 2, axis=-1)
        return loc, jax.nn.softplus(pre_scale) + self.min_scale

    def decode(self, z):
        """p(x|z) logits: (B, H, W, C, L) for categorical, (B, H, W, C) for Bernoulli."""
        out = self.decoder(z)
        return pixels.pixel_logits(out, self.image_shape, self.likelihood, self.num_levels)

    def log_likelihood(self, z, x):
        """log p(x|z) summed over pixels: (B,)."""
        return pixels.log_likelihood(self.decode(z), x, self.likelihood)

    def decode_mean(self, z):
        """The expected pixel value under p(x|z), scaled to [0, 1]: (B, H, W, C)."""
        return pixels.mean(self.decode(z), self.likelihood, self.num_levels)

    def __call__(self, x, *, train: bool = False):
        loc, scale = self.encode(x)
        z = loc + scale * jax.random.normal(self.make_rng("sample"), loc.shape) if train else loc
        logits = self.decode(z)
        return logits, {"loc": loc, "scale": scale, "z": z}

    @property
    def latent_size(self) -> int:
        return decode_variant(self.variant, self.hidden, self.latent_dim)[1]


def save(path: str, variables) -> None:
    """Writes `variables` (`Model.init`'s output, or a train state's params and collections
    merged) to the safetensors file `path`, keys '/'-joined ("params/encoder/Dense_0/kernel")."""
    weights.save(path, variables, model="vae")


def load(path: str) -> dict:
    """The variables of a file `save` wrote (or any safetensors file of '/'-joined keys), as
    the nested dict of numpy arrays `Model.apply` takes; `config.init_from` reads it so."""
    return weights.load(path, model="vae")
