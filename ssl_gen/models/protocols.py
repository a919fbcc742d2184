"""What evaluations (and objectives) may call on a model, as `typing.Protocol`s.

A model is a Flax module; evaluations call its entry points through
`model.apply(variables, *args, method=model.<name>)` and read a few plain attributes. Each
protocol below is what one family of callers relies on today, collected from
`ssl_gen/evals/` and `ssl_gen/objectives/`:

| protocol           | members                             | called by (evals/, objectives/) |
|--------------------|-------------------------------------|---------------------------------|
| `LatentModel`      | encode, log_likelihood              | iwae, elbo, discrete_elbo       |
| `DiscreteLatents`  | + latent_type, latent_shape         | iwae, gradient_variance         |
| `ImageModel`       | encode, decode_mean, latent_size,   | images                          |
|                    | likelihood, num_levels              |                                 |
| `PosteriorMode`    | posterior_mode                      | images (when present)           |
| `PriorSampler`     | sample_prior                        | images (when present)           |
| `FeatureExtractor` | features                            | few_shot, knn, linear_probe     |
| `Sampler`          | sample                              | two_sample                      |

They are `runtime_checkable`: `isinstance(model, DiscreteLatents)` replaces a
`hasattr(model, "latent_type")`. Like every runtime protocol check it tests that the
members exist, not their signatures; the shapes are stated here and in each model's
docstring, and tests/models/test_protocols.py checks them on the models.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

Array = jax.Array


@runtime_checkable
class LatentModel(Protocol):
    """A latent-variable model p(x|z) p(z) with an amortized posterior q(z|x).

    The IWAE bound (`evals/iwae.py`) and the ELBO objectives call these. A model without
    `latent_type` (or with "gaussian") has a Gaussian posterior and a N(0, I) prior.
    """

    def encode(self, x: Array) -> Any:
        """q(z|x)'s parameters: (loc, scale), each (B, D), for a Gaussian latent; logits
        (B, N, C) or (B, N) for a discrete one (`DiscreteLatents`)."""
        ...

    def log_likelihood(self, z: Array, x: Array) -> Array:
        """log p(x|z) summed over the data dimensions: (B,)."""
        ...


@runtime_checkable
class DiscreteLatents(LatentModel, Protocol):
    """A discrete-latent model: q(z|x) factorizes over N categoricals or Bernoullis; the
    prior is uniform. `evals/iwae.py` reads `latent_type`, `evals/gradient_variance.py`
    reads `latent_shape` (to size the exact enumeration)."""

    @property
    def latent_type(self) -> str:
        """"categorical" (one-hot codes, latent_shape (N, C)) or "bernoulli" ((N,))."""
        ...

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """One example's code: (N, C) or (N,)."""
        ...


@runtime_checkable
class ImageModel(Protocol):
    """What the reconstruction and sample figures (`evals/images.py`) need of an image model.

    Reconstructions decode `posterior_mode(x)` when the model has it (`PosteriorMode`), else
    the posterior mean `encode(x)[0]`; samples decode `sample_prior(key, n)` when it has it
    (`PriorSampler`), else N(0, I) draws of size `latent_size`.
    """

    def encode(self, x: Array) -> Any:
        """As `LatentModel.encode`."""
        ...

    def decode_mean(self, z: Array) -> Array:
        """The expected pixel value under p(x|z), in [0, 1]: (B, H, W, C)."""
        ...

    @property
    def latent_size(self) -> int:
        """The flattened code size the decoder reads."""
        ...

    likelihood: str  # "categorical" or "bernoulli": how inputs are scaled for display
    num_levels: int  # grey levels per pixel (categorical likelihood)


@runtime_checkable
class PosteriorMode(Protocol):
    """A latent without a mean in its own space (one-hot codes): its most probable code."""

    def posterior_mode(self, x: Array) -> Array:
        """argmax_z q(z|x): (B, *latent_shape)."""
        ...


@runtime_checkable
class PriorSampler(Protocol):
    """A model whose prior is not N(0, I): it draws its own samples."""

    def sample_prior(self, key: Array, n: int) -> Array:
        """n codes from p(z): (n, *latent_shape)."""
        ...


@runtime_checkable
class FeatureExtractor(Protocol):
    """A representation for probes (linear probe, kNN, few-shot)."""

    def features(self, x: Array) -> Array:
        """One vector per example: (B, D)."""
        ...


@runtime_checkable
class Sampler(Protocol):
    """A generative model that draws data-space samples (a GAN's generator)."""

    def sample(self, key: Array, n: int) -> Array:
        """n samples in data space: (n, *data_shape)."""
        ...
