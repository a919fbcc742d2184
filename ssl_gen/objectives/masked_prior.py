r"""Stage 2 of a VQ-VAE, MaskGIT's way: masked-code cross entropy of a bidirectional prior
over a frozen VQ-VAE's codes (Chang et al. 2022, Sec. 3.2, Eq. 1).

For images x with codes y = (y_1 .. y_N) (the frozen stage-1 encoder's, raster order;
`ssl_gen.models.vq_prior` with `prior.bidirectional=True`), per sample:

  u ~ U(0, 1), mask M = ceil(cos(pi/2 · u) · N) positions uniformly at random (>= 1)
                                                        (`ssl_gen.models.maskgit.training_mask`)
  y_M = y with [MASK] at the masked positions
  L = - sum_{i masked} log p(y_i | y_M)                 (MaskGIT Eq. 1: masked positions only)

and the loss is the mean over every masked code of the batch's real examples (sum of L over
examples / total masked codes; the reference weights its token cross entropy by the mask
the same way), in nats per masked code. Unmasked positions contribute nothing, whatever
their logits. This is not a likelihood of the codes: a masked model's per-position
conditionals do not multiply into one (`ssl_gen.evals.masked_prior` reports masked-code
NLLs at fixed ratios instead).

Parameters, codes and freezing exactly as `ssl_gen.objectives.prior`: codes on the fly from
the frozen VQ-VAE (applied with `train=False`), one part "prior" owning only
`params/gpt/...`. Metrics (logged as `prior/<name>`): `masked_nll` (nats per masked code),
`masked_bits_per_code`, `masked_accuracy` (argmax = target on masked codes), `mask_fraction`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ssl_gen.models import maskgit
from ssl_gen.objectives.parts import Part
from ssl_gen.objectives.prior import PRIOR_PARAMS


def masked_cross_entropy(logits: jax.Array, codes: jax.Array, masked: jax.Array
                         ) -> jax.Array:
    """-sum_{i masked} log softmax(logits)[i, codes_i]: (B,) nats, from logits (B, L, K),
    codes (B, L) and the boolean mask (B, L) (True = masked, i.e. a target)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), codes)
    return jnp.sum(jnp.where(masked, ce, 0.0), -1)


def loss_fn(params, batch, rng, *, model, collections, input_key: str = "image"
            ) -> tuple[jax.Array, dict[str, Any]]:
    """Mean cross entropy over the masked codes (nats per masked code); module docstring."""
    if not isinstance(input_key, str):
        raise ValueError(f"masked_prior: input_key must be a batch field name, got "
                         f"{input_key!r}")
    variables = {**params, **collections}
    x = batch[input_key]
    codes = model.apply(variables, x, method=model.codes)  # (B, L), frozen stage 1
    b, length = codes.shape
    k_mask, k_drop = jax.random.split(rng)
    masked = maskgit.training_mask(k_mask, b, length)  # (B, L)
    logits = model.apply(variables, jnp.where(masked, model.mask_id, codes), train=True,
                         rngs={"dropout": k_drop}, method=model.logits)
    w = jnp.ones((b,)) if batch.get("example_mask") is None else batch["example_mask"]
    weight = masked * w[:, None]  # (B, L): masked codes of real examples
    count = jnp.maximum(jnp.sum(weight), 1.0)
    nll = jnp.sum(masked_cross_entropy(logits, codes, masked) * w) / count
    hit = (jnp.argmax(logits, -1) == codes) * weight
    return nll, {"masked_nll": nll, "masked_bits_per_code": nll / math.log(2),
                 "masked_accuracy": jnp.sum(hit) / count,
                 "mask_fraction": count / jnp.maximum(jnp.sum(w) * length, 1.0)}


def parts(*, model, input_key: str = "image") -> tuple[Part, ...]:
    """One part, "prior", owning the transformer's parameters only (the VQ-VAE stays
    frozen)."""
    if not getattr(model, "bidirectional", False):
        raise ValueError("masked_prior: the model must be a bidirectional prior "
                         "(vq_prior with prior.bidirectional=True)")
    return (Part("prior", functools.partial(loss_fn, model=model, input_key=input_key),
                 params=(PRIOR_PARAMS,)),)
