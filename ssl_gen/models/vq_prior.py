r"""Stage 2 of a VQ-VAE: a GPT prior over a frozen VQ-VAE's code grid (van den Oord et al.
2017, Sec. 3.1 and 4.2: "we fit an autoregressive prior over z"; Esser et al. 2021, taming
transformers, with a transformer as the prior).

Two submodules, two parameter subtrees:
- `vqvae` (`ssl_gen.models.<stage1_model>.Model(**stage1)`, "vqvae" by default or
  "vqgan": any model with `encode`, `quantize`, `decode`, `decode_indices`,
  `codebook_size`, `latent_shape()` and `data_range`): the stage-1 autoencoder. Its weights
  come from the finished stage-1 run through `config.init_from` with mapping
  `{"vqvae": ""}` (the source's whole tree under this model's `vqvae/`, in every
  collection, so the EMA codebook in `vq_stats` follows its encoder). No objective part
  owns `params/vqvae/...` (`ssl_gen.objectives.prior`), so the trainer never updates it,
  and it is applied with `train=False` (no EMA update): frozen by construction.
- `gpt` (`ssl_gen.models.gpt.Model(**prior)`): the prior over the h*w codes of an image
  in raster order (row by row), vocabulary = the VQ-VAE's codebook size and context = h*w,
  both set here from the VQ-VAE (a `prior` that sets them otherwise is a ValueError).

Entry points (`model.apply(variables, ..., method=model.<name>)`):
- `__call__(x, *, train=False) -> (logits (B, L, K), aux)`: x images in the VQ-VAE's
  `data_range`; aux = {"codes": (B, L) int32, the targets; "hidden": the GPT's};
- `codes(x) -> (B, L)`: the frozen encoder's code indices (raster order);
- `logits(tokens, *, train=False) -> (B, L, K)`: the prior on given codes;
- `decode_codes(codes) -> (B, H, W, C)`: the VQ-VAE decoder's image in [0, 1] (clipped);
- `sample_codes(key, n, *, temperature=1., top_k=None, top_p=None) -> (n, L)` and
  `sample(key, n, ...) -> (n, H, W, C)` in `data_range` (the `Sampler` protocol of
  `ssl_gen.evals.two_sample`): ancestral sampling, ON by default
  (`ssl_gen.models.sampling`).

MaskGIT (Chang et al. 2022) as an option: `prior=dict(bidirectional=True, ...)` makes the
GPT a bidirectional masked-token model with a [MASK] token (id = `mask_id` = K;
`ssl_gen.models.gpt`), trained by `ssl_gen.objectives.masked_prior`. Then `logits(tokens)`
takes codes with [MASK]s and gives p(z_i | unmasked codes), `__call__(x)`'s logits are those
of the unmasked codes (no likelihood: a masked model has no exact one), and `sample_codes`
decodes in parallel (`ssl_gen.models.maskgit.decode`: `num_steps` steps of the cosine
schedule, confidence noise `choice_temperature`, both fields of this model).

The nested kwargs are frozen (FrozenDict / tuples) at construction, so the module hashes
(evaluations jit with the model static).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from ssl_gen.models import gpt as gpt_lib
from ssl_gen.models import maskgit, sampling
from ssl_gen.models import vqgan as vqgan_lib
from ssl_gen.models import vqvae as vqvae_lib

STAGE1 = {"vqvae": vqvae_lib, "vqgan": vqgan_lib}  # stage1_model -> its module


def _freeze(v):
    if isinstance(v, Mapping) or hasattr(v, "items"):
        return FrozenDict({k: _freeze(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


class Model(nn.Module):
    """GPT prior over a frozen VQ-VAE's codes (module docstring)."""

    stage1: Any = FrozenDict()  # ssl_gen.models.vqvae.Model kwargs (the stage-1 run's)
    prior: Any = FrozenDict()  # ssl_gen.models.gpt.Model kwargs, without vocab_size/max_len
    stage1_model: str = "vqvae"  # the stage-1 module: ssl_gen.models.vqvae or .vqgan
    # MaskGIT decoding (prior.bidirectional only): steps T and the confidence noise's scale
    # at step 0 (the reference's 4.5; it decays linearly to 0).
    num_steps: int = 8
    choice_temperature: float = 4.5

    def __post_init__(self):
        object.__setattr__(self, "stage1", _freeze(self.stage1))
        object.__setattr__(self, "prior", _freeze(self.prior))
        super().__post_init__()

    def _stage1_class(self):
        if self.stage1_model not in STAGE1:
            raise ValueError(f"vq_prior: stage1_model must be one of {', '.join(STAGE1)}, got "
                             f"{self.stage1_model!r}")
        return STAGE1[self.stage1_model].Model

    def _stage1(self) -> nn.Module:
        return self._stage1_class()(**self.stage1, parent=None)  # unbound: read its fields

    @property
    def codebook_size(self) -> int:
        return self._stage1().codebook_size

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self._stage1().latent_shape()

    @property
    def seq_len(self) -> int:
        h, w = self.latent_shape
        return h * w

    @property
    def bidirectional(self) -> bool:
        """A MaskGIT (masked-token) prior rather than an autoregressive one."""
        return bool(self.prior.get("bidirectional", False))

    @property
    def mask_id(self) -> int:
        """The [MASK] code of a bidirectional prior (= the codebook size)."""
        return self.codebook_size

    @property
    def data_range(self) -> tuple[float, float]:
        return tuple(self._stage1().data_range)

    def setup(self):
        prior = dict(self.prior)
        for name, value in (("vocab_size", self.codebook_size), ("max_len", self.seq_len)):
            if prior.get(name, value) != value:
                raise ValueError(f"vq_prior: prior.{name}={prior[name]} but the VQ-VAE gives "
                                 f"{value}; leave it unset (it is set from the VQ-VAE)")
            prior[name] = value
        if self.bidirectional:
            maskgit.check_args(self.num_steps, self.choice_temperature, self.seq_len)
        self.vqvae = self._stage1_class()(**self.stage1)
        self.gpt = gpt_lib.Model(**prior)

    def codes(self, x):
        """The frozen VQ-VAE's code indices of images x, (B, h w) int32 in raster order."""
        z_e = self.vqvae.encode(x)
        z_q, aux = self.vqvae.quantize(z_e, train=False)
        if self.is_initializing():  # create the decoder's parameters too
            self.vqvae.decode(z_q)
        idx = jax.lax.stop_gradient(aux["indices"])  # (B, h, w)
        return idx.reshape(idx.shape[0], -1)

    def logits(self, tokens, *, train: bool = False):
        """The prior's logits (B, L, K) on codes (B, L): logits[:, t] = log p(z_t | z_<t)
        (bidirectional: log p(z_t | the codes that are not [MASK]))."""
        return self.gpt(tokens, train=train)[0]

    def __call__(self, x, *, train: bool = False):
        codes = self.codes(x)  # (B, L)
        logits, aux = self.gpt(codes, train=train)
        return logits, {**aux, "codes": codes}

    def decode_codes(self, codes):
        """Images (B, H, W, C) in [0, 1] (clipped) decoded from codes (B, h w)."""
        h, w = self.latent_shape
        x = self.vqvae.decode_indices(codes.reshape(codes.shape[0], h, w))
        return jnp.clip(x, 0.0, 1.0)

    def sample_codes(self, key, n: int, *, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None):
        """n code sequences (n, L) drawn from the prior (`ssl_gen.models.sampling`; a
        bidirectional prior: `ssl_gen.models.maskgit.decode`)."""
        # The GPT as a pure function of its own variables, so the sampling loop (a jax
        # fori_loop / scan) calls plain jax code rather than a bound Flax submodule.
        gpt, variables = self.gpt.clone(parent=None), {"params": self.gpt.variables["params"]}
        if self.bidirectional:
            return maskgit.decode(lambda t: gpt.apply(variables, t)[0], key,
                                  mask_id=self.mask_id, num_samples=n, length=self.seq_len,
                                  num_steps=self.num_steps, temperature=temperature,
                                  top_k=top_k, top_p=top_p,
                                  choice_temperature=self.choice_temperature)
        return sampling.sample_tokens(lambda t: gpt.apply(variables, t)[0], key,
                                      num_samples=n, length=self.seq_len,
                                      temperature=temperature, top_k=top_k, top_p=top_p)

    def sample(self, key, n: int, *, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None):
        """n images (n, H, W, C) in `data_range`: decoded prior samples."""
        codes = self.sample_codes(key, n, temperature=temperature, top_k=top_k, top_p=top_p)
        lo, hi = self.data_range
        return lo + (hi - lo) * self.decode_codes(codes)
