r"""VAEs with discrete latents: categorical (one-hot) or Bernoulli codes, for small images.

Posterior q(z|x) factorizes over N latent variables: N categoricals over C classes
(`latent="categorical"`, one-hot z of shape (N, C)) or N Bernoulli units (`"bernoulli"`,
z in {0, 1}^N); the prior p(z) is uniform (C^-N or 2^-N). The decoder p(x|z) is a product
over pixels: Bernoulli for binarized images (the default), or a categorical over
`num_levels` grey levels (as in `ssl_gen.models.vae`). Encoder and decoder are MLPs (no
hidden layer: linear), the decoder mirroring the encoder's widths.

The decoder accepts relaxed codes too (points of the simplex / of [0, 1]^N): Gumbel-Softmax
and straight-through estimators evaluate it there.

Entry points (like the Gaussian VAE's; `setup` because there are several):
`encode(x) -> logits` of q(z|x) ((B, N, C) or (B, N)), `decode(z) -> pixel logits`,
`log_likelihood(z, x) -> log p(x|z)` per example (B,), `decode_mean(z)` (pixel means in
[0, 1]), `posterior_mode(x)` (the most probable code, for reconstructions),
`sample_prior(key, n)` (n codes from the uniform prior), and `__call__(x, *, train=False)
-> (pixel logits, aux)`, decoding the posterior mode (train=False) or a posterior sample
(train=True, rng stream "sample").

Input `x` holds integer levels (uint8 0 .. num_levels-1), shape (B, H, W, C).

Weights: `save(path, variables)` / `load(path)`, one safetensors file with
'/'-joined keys (`ssl_gen.models.weights`), which `config.init_from` reads.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_gen.models import pixels, weights

# Named variants: the latent space and the networks of the papers' discrete-VAE benchmarks
# (their data is 28x28 MNIST; here image_shape stays a separate field).
VARIANTS = {
    # Jang, Gu & Poole (2017), "Categorical Reparameterization with Gumbel-Softmax",
    # Sec. 4.3: 784-512-256-(20x10)-256-512-784, ReLU.
    "jang17": dict(latent="categorical", num_latents=20, num_classes=10, hidden=(512, 256),
                   activation="relu"),
    # The "linear" model of Mnih & Gregor (2014, NVIL), Gu et al. (2016, MuProp), Tucker et
    # al. (2017, REBAR), Grathwohl et al. (2018, RELAX), Dong et al. (2020, DisARM): one
    # layer of 200 Bernoulli units, linear encoder and decoder.
    "linear": dict(latent="bernoulli", num_latents=200, num_classes=2, hidden=(),
                   activation="tanh"),
    # REBAR's / RELAX's "nonlinear" model: two deterministic layers of 200 tanh units on
    # each side of the 200 Bernoulli units (Tucker et al. 2017, tensorflow/models
    # research/rebar: `_create_transformation`; Grathwohl et al. 2018 reuse it).
    "nonlinear": dict(latent="bernoulli", num_latents=200, num_classes=2, hidden=(200, 200),
                      activation="tanh"),
    # DisARM's "nonlinear" model: the same widths with LeakyReLU(0.3) (Dong et al. 2020,
    # google-research/disarm `experiment_launcher_singlelayer.py`).
    "disarm_nonlinear": dict(latent="bernoulli", num_latents=200, num_classes=2,
                             hidden=(200, 200), activation="leaky_relu"),
    # Small enough for unit tests and `runlocal`.
    "tiny": dict(latent="categorical", num_latents=4, num_classes=3, hidden=(32,),
                 activation="relu"),
}

LATENTS = ("categorical", "bernoulli")
LIKELIHOODS = pixels.LIKELIHOODS
ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "leaky_relu": functools.partial(nn.leaky_relu, negative_slope=0.3),  # DisARM's slope
}
_ARCH_FIELDS = ("latent", "num_latents", "num_classes", "hidden", "activation")


class _MLP(nn.Module):
    widths: Sequence[int]
    out: int
    activation: str

    @nn.compact
    def __call__(self, h):
        act = ACTIVATIONS[self.activation]
        for w in self.widths:
            h = act(nn.Dense(w)(h))
        return nn.Dense(self.out)(h)


def decode_variant(variant: str | None, **fields) -> dict:
    """The architecture fields (`_ARCH_FIELDS`) of a named variant, or `fields` as given."""
    if variant is None:
        return dict(fields)
    if variant not in VARIANTS:
        raise ValueError(f"dvae: unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    return dict(VARIANTS[variant])


class Model(nn.Module):
    """Discrete-latent VAE. See the module docstring for the entry points and shapes."""

    image_shape: tuple[int, int, int] = (8, 8, 1)  # (H, W, C) of the data
    latent: str = "categorical"  # "categorical" (one-hot, N x C) or "bernoulli" (N bits)
    num_latents: int = 20  # N latent variables
    num_classes: int = 10  # C classes per categorical latent (ignored for "bernoulli")
    hidden: Sequence[int] = (512, 256)  # encoder widths; the decoder mirrors them; () linear
    activation: str = "relu"  # a key of ACTIVATIONS
    likelihood: str = "bernoulli"  # pixels: "bernoulli" (binarized) or "categorical"
    num_levels: int = 2  # grey levels per pixel (categorical likelihood only)
    variant: str | None = None  # a key of VARIANTS; overrides the architecture fields

    @property
    def arch(self) -> dict:
        """The resolved architecture: latent, num_latents, num_classes, hidden, activation."""
        return decode_variant(self.variant, **{k: getattr(self, k) for k in _ARCH_FIELDS})

    @property
    def latent_type(self) -> str:
        return self.arch["latent"]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """One example's code: (N, C) one-hot for categorical, (N,) for Bernoulli."""
        a = self.arch
        return (a["num_latents"], a["num_classes"]) if a["latent"] == "categorical" else (
            a["num_latents"],)

    @property
    def latent_size(self) -> int:
        """The flattened code size the decoder reads: N * C or N."""
        size = 1
        for d in self.latent_shape:
            size *= d
        return size

    def setup(self):
        a = self.arch
        if a["latent"] not in LATENTS:
            raise ValueError(f"dvae: latent must be one of {LATENTS}, got {a['latent']!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(
                f"dvae: likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if a["activation"] not in ACTIVATIONS:
            raise ValueError(
                f"dvae: activation must be one of {sorted(ACTIVATIONS)}, got {a['activation']!r}")
        if a["num_latents"] < 1 or any(w < 1 for w in a["hidden"]):
            raise ValueError(f"dvae: num_latents and hidden widths must be >= 1, got "
                             f"{a['num_latents']}, {tuple(a['hidden'])}")
        if a["latent"] == "categorical" and a["num_classes"] < 2:
            raise ValueError(f"dvae: num_classes must be >= 2, got {a['num_classes']}")
        if self.likelihood == "categorical" and self.num_levels < 2:
            raise ValueError(f"dvae: num_levels must be >= 2, got {self.num_levels}")
        h, w, c = self.image_shape
        self._per_pixel = self.num_levels if self.likelihood == "categorical" else 1
        hidden = tuple(a["hidden"])
        self.encoder = _MLP(hidden, self.latent_size, a["activation"])
        self.decoder = _MLP(hidden[::-1], h * w * c * self._per_pixel, a["activation"])

    def _check_input(self, x):
        if tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ValueError(
                f"dvae: input images have shape {tuple(x.shape[1:])} but the model has "
                f"image_shape={tuple(self.image_shape)}; set config.model.kwargs.image_shape"
            )

    def encode(self, x):
        """Logits of q(z|x): (B, N, C) for categorical latents, (B, N) for Bernoulli."""
        self._check_input(x)
        levels = self.num_levels if self.likelihood == "categorical" else 2
        h = x.astype(jnp.float32).reshape(x.shape[0], -1) / (levels - 1)  # (B, H*W*C) in [0, 1]
        return self.encoder(h).reshape((x.shape[0],) + self.latent_shape)

    def decode(self, z):
        """Pixel logits from codes z of shape (B, *latent_shape) (one-hot, bits or relaxed):
        (B, H, W, C) for Bernoulli pixels, (B, H, W, C, L) for categorical ones."""
        out = self.decoder(z.reshape(z.shape[0], -1))  # (B, N*C or N) -> (B, H*W*C*L)
        return pixels.pixel_logits(out, self.image_shape, self.likelihood, self.num_levels)

    def log_likelihood(self, z, x):
        """log p(x|z) summed over pixels: (B,)."""
        return pixels.log_likelihood(self.decode(z), x, self.likelihood)

    def decode_mean(self, z):
        """The expected pixel value under p(x|z), scaled to [0, 1]: (B, H, W, C)."""
        return pixels.mean(self.decode(z), self.likelihood, self.num_levels)

    def _hard(self, logits):
        """The code at the argmax of logits (+ noise): one-hot over classes, or 1[logit > 0]."""
        if self.latent_type == "categorical":
            return jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1], dtype=logits.dtype)
        return (logits > 0).astype(logits.dtype)

    def posterior_mode(self, x):
        """argmax_z q(z|x): (B, *latent_shape), the code used for reconstructions."""
        return self._hard(self.encode(x))

    def sample_prior(self, key, n: int):
        """n codes from the uniform prior: (n, *latent_shape) one-hot or 0./1. floats."""
        if self.latent_type == "categorical":
            num, classes = self.latent_shape
            return jax.nn.one_hot(jax.random.randint(key, (n, num), 0, classes), classes)
        return jax.random.bernoulli(key, 0.5, (n,) + self.latent_shape).astype(jnp.float32)

    def __call__(self, x, *, train: bool = False):
        logits = self.encode(x)
        if train:  # one exact posterior sample: Gumbel-Max, or logistic noise for bits
            key = self.make_rng("sample")
            noise = (jax.random.gumbel(key, logits.shape) if self.latent_type == "categorical"
                     else jax.random.logistic(key, logits.shape))
            z = self._hard(logits + noise)
        else:
            z = self._hard(logits)
        return self.decode(z), {"logits": logits, "z": z}


def save(path: str, variables) -> None:
    """Writes `variables` (`Model.init`'s output, or a train state's params and collections
    merged) to the safetensors file `path`, keys '/'-joined ("params/encoder/Dense_0/kernel")."""
    weights.save(path, variables, model="dvae")


def load(path: str) -> dict:
    """The variables of a file `save` wrote (or any safetensors file of '/'-joined keys), as
    the nested dict of numpy arrays `Model.apply` takes; `config.init_from` reads it so."""
    return weights.load(path, model="dvae")
