r"""Sample quality as a kernel two-sample distance: MMD² between model samples and the data.

The squared maximum mean discrepancy (Gretton et al. 2012, "A Kernel Two-Sample Test",
eq. 3, the unbiased U-statistic) with a Gaussian kernel
k(x, y) = exp(-||x - y||² / (2 h²)), h set by the median heuristic on the eval split (the
median pairwise distance, fixed per run, so values are comparable across steps). MMD² is 0
iff the distributions agree (the kernel is characteristic); the unbiased estimate can be
slightly negative.

Reported next to its baselines, measured the same way in the same call:
- `mmd2`: `num` model samples (`model.sample(key, n)`, the `Sampler` protocol) against `num`
  eval examples;
- `mmd2_train_floor`: `num` *training* examples against the same eval examples: the value a
  perfect model of the data distribution would get, up to sampling noise;
- `mmd2_noise`: uniform noise over the data's range against the eval examples: a model
  that learned nothing but the range.

Inputs are flattened to vectors and scaled by the data's range, so the kernel sees
digits' grey levels and 2-D points alike.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.evals import images
from ssl_gen.evals.context import model_variables
from ssl_gen.models import protocols


def _examples(source, n: int, field: str) -> np.ndarray:
    return np.stack([np.asarray(source[i][field], np.float32)
                     for i in range(min(n, len(source)))])


def _write_grid(ctx, real: np.ndarray, fake: np.ndarray, lo: float, hi: float,
                rows: int = 2) -> None:
    """Data rows above sample rows, scaled to [0, 1], as PNG and TensorBoard image."""
    n = min(len(real), rows * images.COLS)
    unit = lambda a: np.clip((a[:n] - lo) / (hi - lo), 0.0, 1.0)
    run = images.run_name(ctx.workdir)
    png = images.figure([("data", unit(real)), ("samples", unit(fake))],
                        f"samples: {run}, step {ctx.step}")
    plots = os.path.join(ctx.workdir, "plots")
    images.save_png(png, os.path.join(plots, f"samples_step{ctx.step}.png"))
    images.save_png(png, os.path.join(plots, "samples_latest.png"))
    images.write_tensorboard(os.path.join(ctx.workdir, "tensorboard", "images"), ctx.step,
                             {"samples": png})


def _vectors(source, n: int, field: str) -> np.ndarray:
    n = min(n, len(source))
    return np.stack([np.asarray(source[i][field], np.float32).reshape(-1) for i in range(n)])


def median_bandwidth(x: np.ndarray) -> float:
    """The median pairwise Euclidean distance of the rows of x (the median heuristic)."""
    d = np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0.0))
    return float(np.median(d[np.triu_indices(len(x), 1)]))


@jax.jit
def mmd2_unbiased(x: jax.Array, y: jax.Array, bandwidth: jax.Array) -> jax.Array:
    """The unbiased MMD² U-statistic between samples x (m, d) and y (n, d), Gaussian kernel."""
    def gram(a, b):
        d2 = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None] - 2 * a @ b.T
        return jnp.exp(-jnp.maximum(d2, 0.0) / (2 * bandwidth**2))

    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    off = lambda k, s: (jnp.sum(k) - jnp.trace(k)) / (s * (s - 1))
    return off(kxx, m) + off(kyy, n) - 2 * jnp.mean(kxy)


def evaluate(state, ctx, *, num: int = 500, field: str = "image", prefix: str = "",
             grid: bool = True) -> dict[str, float]:
    """MMD² of model samples to the eval split, with the train-split floor and a noise
    baseline (see the module docstring).

    Args:
      state: the train state. ctx: the trainer's `EvalContext`.
      num: samples per side (capped by the splits' sizes).
      field: the batch field holding the data.
      prefix: prepended to metric names.
      grid: for image data (H, W, C), also write a figure of data rows above sample rows
        (`plots/samples_step<N>.png`, TensorBoard `images/samples`).
    """
    if num < 2:
        raise ValueError(f"two_sample: num must be >= 2, got {num!r}")
    variables = model_variables(state)
    real = _vectors(ctx.eval_source, num, field)
    train = _vectors(ctx.train_source, len(real), field)
    lo, hi = float(min(real.min(), train.min())), float(max(real.max(), train.max()))
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    k_sample, k_noise = jax.random.split(ctx.rng)
    model = ctx.model
    if not isinstance(model, protocols.Sampler):
        raise TypeError(f"two_sample: {type(model).__name__} has no sample(key, n) "
                        "(the Sampler protocol, ssl_gen.models.protocols)")
    fake = model.apply(variables, k_sample, len(real), method=model.sample)
    fake = np.asarray(jax.device_get(fake), np.float32)
    if grid and ctx.is_main and fake.ndim == 4 and ctx.workdir:
        _write_grid(ctx, _examples(ctx.eval_source, len(real), field), fake, lo, hi)
    fake = fake.reshape(len(real), -1)
    noise = np.asarray(jax.random.uniform(k_noise, real.shape, minval=lo, maxval=hi))
    h = median_bandwidth(real * scale)
    mmd = lambda a: float(mmd2_unbiased(jnp.asarray(a * scale), jnp.asarray(real * scale), h))
    return {f"{prefix}mmd2": mmd(fake), f"{prefix}mmd2_train_floor": mmd(train),
            f"{prefix}mmd2_noise": mmd(noise)}
