r"""A code prior's test-split likelihood, against unigram and uniform baselines, and samples.

For a prior over a frozen VQ-VAE's codes (`ssl_gen.models.vq_prior`: `__call__(x) ->
(logits, {"codes": ...})`, `codes`, `decode_codes`, `sample_codes`), over every example of
the eval split (padding excluded by `example_mask`):

- `nll_nats_per_image` = mean_x -sum_t log p(z_t | z_<t), and `bits_per_code` = that /
  (L ln 2), L the codes per image (bits per dimension of the code grid);

and the baselines, measured on the same codes in the same call:

- `*_unigram`: every code drawn independently from the training split's code frequencies
  (one histogram over all positions), add-one (Laplace) smoothed, q_k = (c_k + 1) / (N + K),
  so a code unseen in training costs log(N + K) instead of infinity (with N = 23k training
  codes for K = 256 the smoothing moves the figure by < 0.01 bits);
- `*_position_unigram`: the same with one histogram per position t (what an independent,
  position-aware model of the codes gets: the part of the structure that is just "where");
- `*_uniform`: L log K nats, log2 K bits per code (no learning at all).

A prior that learned the codes' dependencies beats all three; one that learned only their
marginals sits at a unigram.

The figure (process 0; `plots/prior_samples_step<N>.png` and `_latest.png`, TensorBoard
`images/prior_samples`): eval images (`data`), their stage-1 reconstructions (`stage 1`:
decoded codes, the ceiling any prior sample can reach), and `num_samples` decoded prior
samples drawn with `temperature`, `top_k`, `top_p` (defaults: plain ancestral sampling;
`ssl_gen.models.sampling`). The samples use the eval's rng, fixed per step.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_gen.evals import images
from ssl_gen.evals.context import model_variables
from ssl_gen.models import sampling

CHUNK = 256  # training images encoded per call (padded, so one compilation)


@functools.partial(jax.jit, static_argnames=("model",))
def _batch_stats(model, variables, x, mask):
    """(sum of per-image NLL over real examples, per-position code counts (L, K))."""
    logits, aux = model.apply(variables, x)
    codes = aux["codes"]  # (B, L)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), codes)
    nll = jnp.sum(ce, -1)  # (B,)
    onehot = jax.nn.one_hot(codes, model.codebook_size) * mask[:, None, None]
    return jnp.sum(nll * mask), jnp.sum(onehot, 0)


@functools.partial(jax.jit, static_argnames=("model",))
def _codes(model, variables, x):
    return model.apply(variables, x, method=model.codes)


@functools.partial(jax.jit, static_argnames=("model", "n", "temperature", "top_k", "top_p"))
def figure_images(model, variables, x, key, *, n, temperature, top_k, top_p):
    """Stage-1 reconstructions of x and n decoded prior samples, both (., H, W, C) in
    [0, 1]."""
    recon = model.apply(variables, model.apply(variables, x, method=model.codes),
                        method=model.decode_codes)
    codes = model.apply(variables, key, n, temperature=temperature, top_k=top_k, top_p=top_p,
                        method=model.sample_codes)
    return recon, model.apply(variables, codes, method=model.decode_codes)


def train_position_counts(model, variables, source, field: str) -> np.ndarray:
    """Per-position code counts (L, K) of a host source (e.g. the training split)."""
    counts = np.zeros((model.seq_len, model.codebook_size), np.float64)
    for start in range(0, len(source), CHUNK):
        idx = range(start, min(start + CHUNK, len(source)))
        x = np.stack([np.asarray(source[i][field]) for i in idx])
        pad = CHUNK - len(x)
        x = np.concatenate([x, np.repeat(x[:1], pad, 0)]) if pad else x
        codes = np.asarray(_codes(model, variables, x))[:len(idx)]  # (b, L)
        for t in range(codes.shape[1]):
            counts[t] += np.bincount(codes[:, t], minlength=model.codebook_size)
    return counts


def baseline_nll(train_counts: np.ndarray, test_counts: np.ndarray, *,
                 per_position: bool) -> float:
    """Total NLL (nats) of the test codes under add-one smoothed training frequencies."""
    k = train_counts.shape[-1]
    c = train_counts if per_position else np.broadcast_to(train_counts.sum(0), train_counts.shape)
    logq = np.log((c + 1.0) / (c.sum(-1, keepdims=True) + k))  # (L, K)
    return float(-(test_counts * logq).sum())


def write_figure(ctx, data, recon, samples, title_extra: str) -> None:
    """plots/prior_samples_step<N>.png, _latest.png and TensorBoard images/prior_samples."""
    blocks = [("data", data), ("stage 1", recon), ("samples", samples)]
    title = f"prior samples ({title_extra}): {images.run_name(ctx.workdir)}, step {ctx.step}"
    png = images.figure(blocks, title)
    plots = os.path.join(ctx.workdir, "plots")
    images.save_png(png, os.path.join(plots, f"prior_samples_step{ctx.step}.png"))
    images.save_png(png, os.path.join(plots, "prior_samples_latest.png"))
    images.write_tensorboard(os.path.join(ctx.workdir, "tensorboard", "images"), ctx.step,
                             {"prior_samples": png})


def evaluate(state, ctx, *, field: str = "image", num_samples: int = 32,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             baselines: bool = True, grid: bool = True, prefix: str = "") -> dict[str, float]:
    """Test-split NLL (nats/image, bits/code) with its baselines, and the sample figure.

    Args:
      state: the train state. ctx: the trainer's `EvalContext`.
      field: the batch field holding the images.
      num_samples: prior samples in the figure (8 per row).
      temperature, top_k, top_p: the figure's sampling (`ssl_gen.models.sampling`).
      baselines: also report the unigram, position-unigram and uniform baselines.
      grid: write the figure.
      prefix: prepended to metric names.
    """
    sampling.check_args(temperature, top_k, top_p)
    if num_samples < 1:
        raise ValueError(f"prior: num_samples must be >= 1, got {num_samples!r}")
    model = ctx.model
    if getattr(model, "bidirectional", False):
        raise ValueError("prior: a masked (MaskGIT) prior has no exact likelihood; evaluate "
                         "it with ssl_gen.evals.masked_prior")
    variables = model_variables(state)
    total, n, test_counts = 0.0, 0.0, None  # summed on the devices, read once at the end
    for batch in ctx.eval_batches():
        mask = batch["example_mask"]
        s, counts = _batch_stats(model, variables, batch[field], mask)
        total, n = total + s, n + jnp.sum(mask)
        test_counts = counts if test_counts is None else test_counts + counts
    total, n = float(total), float(n)
    if n == 0:
        raise ValueError("prior: the eval split is empty")
    length, k = model.seq_len, model.codebook_size
    bits = lambda nats: nats / (length * math.log(2))
    out = {"nll_nats_per_image": total / n, "bits_per_code": bits(total / n)}
    if baselines:
        train = train_position_counts(model, variables, ctx.train_source, field)
        test = np.asarray(jax.device_get(test_counts), np.float64)
        for name, per_position in (("unigram", False), ("position_unigram", True)):
            nats = baseline_nll(train, test, per_position=per_position) / n
            out[f"nll_nats_per_image_{name}"] = nats
            out[f"bits_per_code_{name}"] = bits(nats)
        out["nll_nats_per_image_uniform"] = length * math.log(k)
        out["bits_per_code_uniform"] = math.log2(k)
    if grid and ctx.workdir:
        m = min(images.COLS, len(ctx.eval_source))
        x = np.stack([np.asarray(ctx.eval_source[i][field]) for i in range(m)])
        recon, samples = figure_images(model, variables, x, ctx.rng, n=num_samples,
                                        temperature=float(temperature), top_k=top_k,
                                        top_p=top_p)
        recon, samples = (np.asarray(a.addressable_data(0)) for a in (recon, samples))
        if ctx.is_main:
            lo, hi = model.data_range
            data = np.clip((x.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
            how = f"T={temperature:g}" + (f", top-k {top_k}" if top_k else "") + (
                f", top-p {top_p:g}" if top_p else "")
            write_figure(ctx, data, recon, samples, how)
    return {f"{prefix}{name}": float(v) for name, v in out.items()}
