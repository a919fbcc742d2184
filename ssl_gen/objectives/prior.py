r"""Stage 2 of a VQ-VAE: next-code cross entropy of a prior over a frozen VQ-VAE's codes.

For images x with codes z = (z_1 .. z_L) = the frozen stage-1 encoder's indices in raster
order (`ssl_gen.models.vq_prior`), the prior's negative log-likelihood of one image is

  NLL(x) = -sum_{t=1..L} log p(z_t | z_<t)      (nats per image; `nll_nats_per_image`)

and the loss is its mean over the batch's real examples divided by L (nats per code), so
the learning rate does not depend on the grid size. `bits_per_code` = NLL / (L ln 2): the
bits per dimension of the code grid (one dimension = one code position; log2 K for the
uniform prior). A per-pixel figure is not reported: the VQ-VAE's decoder is deterministic,
so NLL / #pixels is the code's rate per pixel, not a likelihood of the pixels.

Codes on the fly, not cached: each step encodes its batch with the frozen stage-1
parameters. The pipeline delivers images, so the prior trains on the same batches,
splits and sharding as every other run (no second, code-valued dataset to build, keep in
step with the stage-1 checkpoint, and invalidate); and at this scale the encoder (a small
conv net on 8x8 digits, no gradient) costs a fraction of the transformer's forward and
backward. A large image prior would cache the codes once instead.

Where the stage-1 parameters live: in the prior's own model, under `params/vqvae/` and
`vq_stats/vqvae/` (loaded by `config.init_from` with mapping {"vqvae": ""}). This module
declares one part, "prior", owning only `params/gpt/...`: the trainer never updates a
parameter no part owns (`ssl_gen.train.objective`), gives it no optimizer state and takes
no gradient for it, so the VQ-VAE is frozen whatever the optimizer (weight decay
included); the loss applies it with `train=False`, so its EMA codebook does not move either.
Metrics are logged as `prior/<name>`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ssl_gen.objectives.elbo import masked_mean
from ssl_gen.objectives.parts import Part

PRIOR_PARAMS = r"^params/gpt/"  # what the prior's one part owns; params/vqvae/ is frozen


def nll_per_example(logits: jax.Array, codes: jax.Array) -> jax.Array:
    """-sum_t log p(z_t | z_<t): (B,) nats, from aligned logits (B, L, K) and codes (B, L)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), codes)
    return jnp.sum(ce, axis=-1)


def loss_fn(params, batch, rng, *, model, collections, input_key: str = "image"
            ) -> tuple[jax.Array, dict[str, Any]]:
    """Mean next-code cross entropy in nats per code; see the module docstring."""
    if not isinstance(input_key, str):
        raise ValueError(f"prior: input_key must be a batch field name, got {input_key!r}")
    x = batch[input_key]
    mask = batch.get("example_mask")
    logits, aux = model.apply({**params, **collections}, x, train=True,
                              rngs={"dropout": rng})
    length = aux["codes"].shape[1]
    nll = masked_mean(nll_per_example(logits, aux["codes"]), mask)  # nats per image
    acc = masked_mean(jnp.mean(jnp.argmax(logits, -1) == aux["codes"], -1), mask)
    return nll / length, {"nll_nats_per_image": nll,
                          "bits_per_code": nll / (length * math.log(2)),
                          "next_code_accuracy": acc}


def parts(*, model, input_key: str = "image") -> tuple[Part, ...]:
    """One part, "prior", owning the GPT's parameters only (the VQ-VAE stays frozen)."""
    return (Part("prior", functools.partial(loss_fn, model=model, input_key=input_key),
                 params=(PRIOR_PARAMS,)),)
