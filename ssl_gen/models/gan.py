r"""A small GAN: an MLP generator and an MLP discriminator, for vectors or small images.

The two-part objective (`ssl_gen.objectives.gan`) trains them with alternating updates; the
parameters live under `params/generator/...` and `params/discriminator/...`, the paths the
objective's parts select. The architecture is the fully connected GAN of Goodfellow et al.
(2014) at the scale of the 2-D mixture-of-Gaussians benchmarks (Metz et al. 2017, "Unrolled
GANs": 2 hidden layers of 128 ReLU units in G, 2 of 128 in D; `VARIANTS["metz17"]`).

Data space: vectors of `data_shape`. With `data_range=(lo, hi)` (e.g. (0, 16) for the
digits' grey levels) inputs are mapped linearly to [-1, 1] inside the discriminator and the
generator ends in tanh, its samples mapped back to [lo, hi]; with `data_range=None` (real
vectors) both are linear.

Entry points: `generate(z) -> samples in data space`, `discriminate(x) -> logits (B,)`,
`sample(key, n) -> n samples` (z ~ N(0, I)), and `__call__(x, *, train=False) -> (logits,
aux)` (the discriminator on x; it also builds the generator, so `init` creates both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_gen.models import variants

VARIANTS = {
    # Metz et al. (2017), "Unrolled Generative Adversarial Networks", App. A (mixture of
    # 8 Gaussians): G and D with 2 hidden layers of 128 units, z of 256 dimensions.
    "metz17": dict(latent_dim=256, generator_hidden=(128, 128),
                   discriminator_hidden=(128, 128)),
    # Small enough for unit tests and `runlocal`.
    "tiny": dict(latent_dim=4, generator_hidden=(16,), discriminator_hidden=(16,)),
}


class _MLP(nn.Module):
    widths: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, x):
        for w in self.widths:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(self.out)(x)


class Model(nn.Module):
    """Generator G(z) and discriminator D(x) (see the module docstring)."""

    data_shape: Sequence[int] = (2,)
    latent_dim: int = 16
    generator_hidden: Sequence[int] = (128, 128)
    discriminator_hidden: Sequence[int] = (128, 128)
    data_range: tuple[float, float] | None = None
    variant: str | None = None

    def _cfg(self, name):
        return variants.field(self, name, VARIANTS, "gan")

    def setup(self):
        if self.data_range is not None and not (
                len(self.data_range) == 2 and self.data_range[0] < self.data_range[1]):
            raise ValueError(f"gan: data_range must be (lo, hi) with lo < hi, got "
                             f"{self.data_range!r}")
        dim = math.prod(self.data_shape)
        self.generator = _MLP(tuple(self._cfg("generator_hidden")), dim)
        self.discriminator = _MLP(tuple(self._cfg("discriminator_hidden")), 1)

    @property
    def z_dim(self) -> int:
        return self._cfg("latent_dim")

    def _to_unit(self, x):
        x = jnp.asarray(x, jnp.float32)
        if self.data_range is None:
            return x
        lo, hi = self.data_range
        return (x - lo) / (hi - lo) * 2.0 - 1.0

    def _from_unit(self, y):
        if self.data_range is None:
            return y
        lo, hi = self.data_range
        return (jnp.tanh(y) + 1.0) / 2.0 * (hi - lo) + lo

    def generate(self, z):
        """Samples in data space, (B, *data_shape), from latents z (B, latent_dim)."""
        y = self.generator(z)
        return self._from_unit(y).reshape((z.shape[0], *self.data_shape))

    def discriminate(self, x):
        """Logits (B,) that x is real; x in data space (B, *data_shape)."""
        u = self._to_unit(x).reshape((x.shape[0], -1))
        return self.discriminator(u)[:, 0]

    def sample(self, key, n: int):
        return self.generate(jax.random.normal(key, (n, self.z_dim)))

    def __call__(self, x, *, train: bool = False):
        del train
        logits = self.discriminate(x)
        fake = self.generate(jnp.zeros((x.shape[0], self.z_dim)))
        return logits, {"fake": fake}
