r"""The CPC objective (van den Oord, Li & Vinyals 2018, Eq. 4): InfoNCE per prediction step.

For each step k = 1..K of `ssl_gen.models.cpc.Model`, every anchor (b, t) with
t < T' - k predicts z_{b, t+k} from its context c_{b,t}; the score of a candidate latent z is
the log-bilinear f_k(z, c_t) = z^T W_k c_t (Eq. 3), and L_k is the mean over anchors of the
cross-entropy of picking the positive z_{b, t+k} among N candidates
(`contrastive_losses.info_nce_loss`). The candidates ("negatives", the paper's X, drawn from
the "proposal distribution" p(z_{t+k})) are, by `negatives`:

| negatives | candidates of anchor (b, t)                    | N          | logits            |
|-----------|------------------------------------------------|------------|-------------------|
| "batch"   | z_{b', t+k} for every batch item b' (same t)   | B          | (T' - k) x (B, B) |
| "time"    | z_{b, s+k}, s < T' - k (same sequence)         | T' - k     | B x (T'-k, T'-k)  |
| "both"    | z_{b', s+k} for every (b', s)                  | B (T' - k) | one square matrix |

On a patch grid (`ssl_gen.models.cpc_grid`: z (B, R, S, Dz), anchor (b, i, j) predicting
z_{b, i+k, j}, k among `model.offsets()`), the (i, j) with i < R - k are flattened into
one position axis in raster order and take the place of t: "batch" the same position in
every image, "time" every position of the same image, "both" every position of every
image.

The loss is mean_k L_k. Each block of logits is square with the positive on its diagonal,
so every anchor has the same N and the bound below is exact per block.

Metrics, per step k: `loss_k{k}` (L_k), `acc_k{k}` (the fraction of anchors whose top score
is the positive, `contrastive_accuracy`; chance is 1 / N) and `mi_k{k}`, the InfoNCE lower
bound on I(x_{t+k}; c_t) in nats, log N - L_k (Eq. 5 / Poole et al. 2019 Eq. 12: it equals
`mi_bounds.infonce` of the block, and can never exceed log N); `acc` and `mi` average them
over k. The step's rng is unused (the model is deterministic).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.objectives.contrastive_losses import contrastive_accuracy, info_nce_loss

NEGATIVES = ("batch", "time", "both")


def check(negatives, input_key) -> None:
    if negatives not in NEGATIVES:
        raise ValueError(f"cpc: negatives={negatives!r} is not one of {NEGATIVES}")
    if not isinstance(input_key, str):
        raise ValueError(f"cpc: input_key must be a batch field name, got {input_key!r}")


def step_logits(pred, z, k: int, negatives: str) -> jax.Array:
    """The square score blocks of step k, positives on each block's diagonal.

    Args:
      pred: (B, T', Dz), W_k c_t at every frame. z: (B, T', Dz), the latents.
      k: the prediction step (1 <= k < T').
      negatives: "batch", "time" or "both" (module docstring).

    Returns:
      (T' - k, B, B) for "batch", (B, T' - k, T' - k) for "time", (1, B (T'-k), B (T'-k))
      for "both"; entry [., i, j] = candidate j's latent . anchor i's prediction.
    """
    b, t, d = z.shape[0], z.shape[1], z.shape[-1]
    if not 1 <= k < t:
        raise ValueError(f"cpc: prediction step {k} needs more than {k} frames, got {t}")
    anchors, targets = pred[:, :t - k], z[:, k:]  # (B, T'-k, Dz): row (b, t) -> z_{b,t+k}
    if z.ndim == 4:  # a patch grid (B, R, S, Dz): (i, j) -> z_{i+k, j}, positions flattened
        anchors, targets = anchors.reshape(b, -1, d), targets.reshape(b, -1, d)
        t = anchors.shape[1] + k  # (B, (R - k) S, Dz): t - k anchors per image
    if negatives == "batch":
        return jnp.einsum("btd,ctd->tbc", anchors, targets)
    if negatives == "time":
        return jnp.einsum("btd,bsd->bts", anchors, targets)
    a, y = anchors.reshape(b * (t - k), d), targets.reshape(b * (t - k), d)
    return (a @ y.T)[None]


def infonce_per_step(preds, z, negatives: str, offsets=None) -> dict[str, jax.Array]:
    """Per step k: L_k, the accuracy and log N - L_k, over the blocks of `step_logits`.

    Args:
      preds: (K, B, T', Dz), the model's W_k c. z: (B, T', Dz). Or a patch grid
        (`models.cpc_grid`): preds (K, B, R, S, Dz), z (B, R, S, Dz), predictions k rows down.
      offsets: the k of each prediction (default 1..K; the grid's `model.offsets()`).
    """
    out = {}
    offsets = range(1, preds.shape[0] + 1) if offsets is None else offsets
    for n, k in enumerate(offsets):
        logits = step_logits(preds[n], z, k, negatives).astype(jnp.float32)
        num = logits.shape[-1]  # candidates per anchor; every block has the same size
        loss = jnp.mean(jax.vmap(info_nce_loss)(logits))
        out[f"loss_k{k}"] = loss
        out[f"acc_k{k}"] = jnp.mean(jax.vmap(contrastive_accuracy)(logits))
        out[f"mi_k{k}"] = np.log(num) - loss
    return out


def loss_fn(params, batch, rng, *, model, negatives: str = "batch", input_key: str = "x"
            ) -> tuple[jax.Array, dict[str, Any]]:
    """mean_k L_k of `model` on `batch[input_key]` (B, T) or (B, T, C), with the metrics of
    the module docstring. Training batches are full (no padded rows)."""
    del rng
    check(negatives, input_key)
    preds, aux = model.apply(params, batch[input_key], train=True)
    offsets = tuple(model.offsets()) if hasattr(model, "offsets") else tuple(
        range(1, preds.shape[0] + 1))
    per_step = infonce_per_step(preds, aux["z"], negatives, offsets)
    num_steps = len(offsets)
    mean = lambda name: sum(per_step[f"{name}_k{k}"] for k in offsets) / num_steps
    return mean("loss"), {**per_step, "acc": mean("acc"), "mi": mean("mi")}
