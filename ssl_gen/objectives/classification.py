r"""Supervised classification: softmax cross-entropy on a model's logits.

One part (`loss_fn`) owning every parameter; the model is called as
`model.apply(params, batch[input_key], train=True, rngs={"dropout": rng})` and returns
`(logits (B, C), aux)` (the models' contract; a ViT with `num_classes=C`). With label
smoothing eps the target is (1 - eps) one_hot(y) + eps / C (Szegedy et al. 2016, Sec. 7;
MAE's and DeiT's fine-tuning use eps = 0.1). Padded examples (`example_mask` 0) count for
nothing. Metrics: `accuracy` (top-1 on the training batch, in training mode) and
`nll`, the cross-entropy against the unsmoothed labels (equal to the loss when eps = 0).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def _check(label_smoothing, input_key, label_key) -> None:
    if not (isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 1):
        raise ValueError(f"classification: label_smoothing must be in [0, 1), got "
                         f"{label_smoothing!r}")
    for name, v in (("input_key", input_key), ("label_key", label_key)):
        if not isinstance(v, str) or not v:
            raise ValueError(f"classification: {name} must be a batch field name, got {v!r}")


def cross_entropy(logits, labels, *, label_smoothing: float = 0.0, weights=None):
    """(weighted mean smoothed cross-entropy, weighted mean plain cross-entropy, weighted
    accuracy) of logits (B, C) against int labels (B,); `weights` (B,) default 1."""
    logits = logits.astype(jnp.float32)
    c = logits.shape[-1]
    onehot = jax.nn.one_hot(labels, c)
    smooth = onehot * (1.0 - label_smoothing) + label_smoothing / c
    weights = jnp.ones(labels.shape[0]) if weights is None else weights
    total = jnp.maximum(jnp.sum(weights), 1.0)
    mean = lambda v: jnp.sum(v * weights) / total
    return (mean(optax.softmax_cross_entropy(logits, smooth)),
            mean(optax.softmax_cross_entropy(logits, onehot)),
            mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32)))


def loss_fn(params, batch, rng, *, model, label_smoothing: float = 0.0,
            input_key: str = "image", label_key: str = "label"
            ) -> tuple[jax.Array, dict[str, Any]]:
    """Smoothed softmax cross-entropy of `model`'s logits on `batch[input_key]` against
    `batch[label_key]`."""
    _check(label_smoothing, input_key, label_key)
    for key in (input_key, label_key):
        if key not in batch:
            raise ValueError(f"classification: the batch has no field {key!r} (its fields: "
                             f"{', '.join(sorted(batch))}); set objective.kwargs."
                             f"{'input_key' if key == input_key else 'label_key'}")
    logits, _ = model.apply(params, batch[input_key], train=True, rngs={"dropout": rng})
    if logits.ndim != 2:
        raise ValueError(f"classification: the model returned logits of shape {logits.shape}, "
                         "not (batch, classes); give it a head (e.g. vit num_classes=C)")
    loss, nll, acc = cross_entropy(logits, batch[label_key].astype(jnp.int32),
                                   label_smoothing=label_smoothing,
                                   weights=batch.get("example_mask"))
    return loss, {"accuracy": acc, "nll": nll}
