r"""Codebook usage and reconstruction error of a discrete autoencoder on the whole eval split.

For a model whose `__call__(x, *, train=False, mask=None)` returns (reconstruction in unit
scale, aux with `indices` and `target`) (`ssl_gen.models.vqvae`), over every example of
the eval split (padding excluded by `example_mask`):

- `mse`: mean squared reconstruction error per pixel, in the model's unit scale ([0, 1]);
- `codes_used`: how many of the K codes appear at least once in the split's code maps, and
  `codes_used_fraction` = codes_used / K. Unlike a per-batch count or the perplexity, this
  does not depend on the eval batch size (the count of a union is the count of a union);
- `perplexity`: exp H(p), p the split's code histogram (the number of equally used codes
  that would give the same entropy);
- `dead_fraction`: for an EMA codebook, the fraction of codes whose debiased EMA count is
  below the quantizer's `dead_threshold` (the training side's view); absent otherwise.

Baselines, measured the same way in the same call:
- `mse_mean_image`: predicting the mean training image for every eval image;
- `mse_random_init` and `codes_used_random_init`: the same model freshly initialized
  (from `baseline_seed`, so the baseline is the same number at every eval step).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.evals.context import model_variables
from ssl_gen.models.vqvae import to_unit


@functools.partial(jax.jit, static_argnames=("model",))
def _batch_stats(model, variables, x, mask):
    """(sum of per-pixel squared errors over real examples, code histogram (K,),
    dead_fraction or NaN) of one batch."""
    x_hat, aux = model.apply(variables, x, train=False, mask=mask)
    per = jnp.mean((x_hat - aux["target"]).reshape(x.shape[0], -1) ** 2, -1)
    idx = aux["indices"].reshape(x.shape[0], -1)  # (B, h w)
    hist = jnp.zeros((model.codebook_size,), jnp.float32).at[idx].add(
        jnp.broadcast_to(mask[:, None], idx.shape))
    dead = aux.get("dead_fraction", jnp.asarray(jnp.nan, jnp.float32))
    return jnp.sum(per * mask), hist, dead


def _sweep(model, variables, ctx, field):
    sq, n, hist, dead = 0.0, 0.0, None, float("nan")
    for batch in ctx.eval_batches():
        mask = batch["example_mask"]
        s, h, d = _batch_stats(model, variables, batch[field], mask)
        sq += float(s)
        n += float(jnp.sum(mask))
        hist = h if hist is None else hist + h
        dead = float(d)
    if n == 0:
        raise ValueError("codebook: the eval split is empty")
    return sq / n, np.asarray(hist), dead


def _usage(hist: np.ndarray) -> tuple[int, float]:
    p = hist / max(hist.sum(), 1e-12)
    nz = p[p > 0]
    return int((hist > 0).sum()), float(np.exp(-(nz * np.log(nz)).sum()))


def evaluate(state, ctx, *, field: str = "image", prefix: str = "",
             baselines: bool = True, baseline_seed: int = 0) -> dict[str, float]:
    """Reconstruction MSE and codebook usage over the whole eval split, with baselines.

    Args:
      state: the train state. ctx: the trainer's `EvalContext`.
      field: the batch field holding the images.
      prefix: prepended to metric names.
      baselines: also measure the mean-image and random-initialization baselines.
      baseline_seed: the random-initialization baseline's seed.
    """
    model = ctx.model
    k = model.codebook_size
    mse, hist, dead = _sweep(model, model_variables(state), ctx, field)
    used, perplexity = _usage(hist)
    out = {"mse": mse, "codes_used": float(used), "codes_used_fraction": used / k,
           "perplexity": perplexity}
    if not np.isnan(dead):
        out["dead_fraction"] = dead
    if baselines:
        n_train = len(ctx.train_source)
        mean = np.mean([np.asarray(to_unit(ctx.train_source[i][field], model.data_range))
                        for i in range(n_train)], 0)
        sq, n = 0.0, 0
        for i in range(len(ctx.eval_source)):
            u = np.asarray(to_unit(ctx.eval_source[i][field], model.data_range))
            sq, n = sq + float(np.mean((u - mean) ** 2)), n + 1
        out["mse_mean_image"] = sq / n
        x0 = jnp.asarray(ctx.eval_source[0][field])[None]
        fresh = model.init({"params": jax.random.key(baseline_seed)}, x0)
        mse0, hist0, _ = _sweep(model, fresh, ctx, field)
        out["mse_random_init"] = mse0
        out["codes_used_random_init"] = float(_usage(hist0)[0])
    return {f"{prefix}{name}": float(v) for name, v in out.items()}
