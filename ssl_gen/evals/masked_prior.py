r"""A masked (MaskGIT) code prior's test-split masked-code NLL at fixed mask ratios, against
a position-unigram baseline on the same masked codes, and its decoded samples.

A bidirectional masked-token model (`ssl_gen.models.vq_prior` with
`prior.bidirectional=True`, `ssl_gen.objectives.masked_prior`) has no exact likelihood of
a code grid: its conditionals p(y_i | unmasked codes) do not multiply into one joint. What
it does define, and what this eval reports, is how well it predicts masked codes from the
rest. For each ratio r in `ratios` and every example of the eval split (padding excluded):
mask m = ceil(r · N) of its N codes (at least one), chosen uniformly at random with a key
fixed by `seed`, the ratio and the batch index (the same masks at every eval step of a
run), and

- `masked_nll_r<100r>` = mean over the masked codes of -log p(y_i | y_unmasked), nats per
  masked code; `masked_bits_r<100r>` = that / ln 2; `masked_acc_r<100r>`: argmax = code;
- `masked_nll_r<100r>_position_unigram`: the same masked codes under the training split's
  per-position code frequencies, add-one smoothed (`ssl_gen.evals.prior.baseline_nll`'s
  rule): what a model that ignores the unmasked codes gets. At r = 1 nothing is unmasked,
  so a well-fit model should reach it, not beat it (it can only learn the same marginals);
  at r < 1 the gap is what the model gets from the visible codes;
- `masked_nll_uniform` = log K.

These figures are not comparable with an autoregressive prior's nats per image
(`ssl_gen.evals.prior`): sample quality is compared model-agnostically with the MMD² of
decoded samples (`ssl_gen.evals.two_sample`). The figure is `ssl_gen.evals.prior`'s
(`plots/prior_samples_step<N>.png`, `_latest.png`): data, stage-1 reconstructions and
`num_samples` samples decoded in parallel (`ssl_gen.models.maskgit`; the model's
`num_steps` and `choice_temperature`, this eval's `temperature`, `top_k`, `top_p`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_gen.evals import images
from ssl_gen.evals import prior as prior_eval
from ssl_gen.evals.context import model_variables
from ssl_gen.models import sampling


def fixed_ratio_mask(key: jax.Array, batch: int, length: int, ratio: float) -> jax.Array:
    """Boolean (batch, length), True = masked: ceil(ratio · N) (>= 1) uniform positions."""
    count = min(max(math.ceil(ratio * length), 1), length)
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(key, (batch, length)), -1), -1)
    return rank < count


@functools.partial(jax.jit, static_argnames=("model", "ratio"))
def _batch_stats(model, variables, x, example_mask, key, logq, *, ratio):
    """Sums over the masked codes of real examples: (model nats, hits, baseline nats, count)."""
    codes = model.apply(variables, x, method=model.codes)  # (B, L)
    masked = fixed_ratio_mask(key, *codes.shape, ratio) * example_mask[:, None]  # (B, L)
    logits = model.apply(variables, jnp.where(masked > 0, model.mask_id, codes),
                         method=model.logits).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, codes)  # (B, L)
    hit = jnp.argmax(logits, -1) == codes
    base = -jnp.take_along_axis(logq[None], codes[..., None], -1)[..., 0]  # (B, L)
    return (jnp.sum(ce * masked), jnp.sum(hit * masked), jnp.sum(base * masked),
            jnp.sum(masked))


def evaluate(state, ctx, *, field: str = "image", ratios=(0.25, 0.5, 0.75, 1.0),
             seed: int = 0, num_samples: int = 32, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, grid: bool = True,
             prefix: str = "") -> dict[str, float]:
    """Masked-code NLL per ratio with its position-unigram baseline, and the sample figure.

    Args:
      state: the train state. ctx: the trainer's `EvalContext`.
      field: the batch field holding the images.
      ratios: the mask ratios, each in (0, 1].
      seed: the masks' key (fixed across eval steps).
      num_samples: decoded samples in the figure (8 per row).
      temperature, top_k, top_p: the figure's token filters (`ssl_gen.models.sampling`).
      grid: write the figure.
      prefix: prepended to metric names.
    """
    sampling.check_args(temperature, top_k, top_p)
    ratios = tuple(float(r) for r in ratios)
    if not ratios or not all(0.0 < r <= 1.0 for r in ratios):
        raise ValueError(f"masked_prior: ratios must be a non-empty list in (0, 1], got "
                         f"{ratios!r}")
    if num_samples < 1:
        raise ValueError(f"masked_prior: num_samples must be >= 1, got {num_samples!r}")
    model = ctx.model
    if not getattr(model, "bidirectional", False):
        raise ValueError("masked_prior: the model is not a bidirectional (MaskGIT) prior; "
                         "evaluate an autoregressive one with ssl_gen.evals.prior")
    variables = model_variables(state)
    k = model.codebook_size
    train = prior_eval.train_position_counts(model, variables, ctx.train_source, field)
    logq = jnp.asarray(np.log((train + 1.0) / (train.sum(-1, keepdims=True) + k)),
                       jnp.float32)  # (L, K) add-one smoothed position frequencies
    out = {"masked_nll_uniform": math.log(k)}
    for j, r in enumerate(ratios):
        key = jax.random.fold_in(jax.random.key(seed), j)
        sums = None  # summed on the devices, read once per ratio
        for i, batch in enumerate(ctx.eval_batches()):
            s = _batch_stats(model, variables, batch[field], batch["example_mask"],
                             jax.random.fold_in(key, i), logq, ratio=r)
            sums = s if sums is None else tuple(a + b for a, b in zip(sums, s, strict=True))
        nats, hits, base, count = (float(v) for v in jax.device_get(sums))
        if count == 0:
            raise ValueError("masked_prior: the eval split is empty")
        name = f"r{round(100 * r)}"
        out[f"masked_nll_{name}"] = nats / count
        out[f"masked_bits_{name}"] = nats / count / math.log(2)
        out[f"masked_acc_{name}"] = hits / count
        out[f"masked_nll_{name}_position_unigram"] = base / count
    if grid and ctx.workdir:
        m = min(images.COLS, len(ctx.eval_source))
        x = np.stack([np.asarray(ctx.eval_source[i][field]) for i in range(m)])
        recon, samples = prior_eval.figure_images(model, variables, x, ctx.rng, n=num_samples,
                                                  temperature=float(temperature),
                                                  top_k=top_k, top_p=top_p)
        recon, samples = (np.asarray(a.addressable_data(0)) for a in (recon, samples))
        if ctx.is_main:
            lo, hi = model.data_range
            data = np.clip((x.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
            how = (f"MaskGIT, {model.num_steps} steps, T={temperature:g}"
                   + (f", top-k {top_k}" if top_k else "") + (f", top-p {top_p:g}" if top_p
                                                              else ""))
            prior_eval.write_figure(ctx, data, recon, samples, how)
    return {f"{prefix}{name}": float(v) for name, v in out.items()}
