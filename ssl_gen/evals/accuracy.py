"""Top-1 accuracy of a classifier on the eval split (every example once, padding excluded).

The model is called in eval mode, `model.apply(variables, x) -> (logits (B, C), aux)`, over
the trainer's `ctx.eval_batches()` (global batches with an `example_mask`); the counts are
summed on the devices, so multi-host runs agree. Reports `accuracy` and `nll` (the mean
cross-entropy), with an optional prefix.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from ssl_gen.evals.context import model_variables


@functools.partial(jax.jit, static_argnames=("model", "field", "label_field"))
def _counts(variables, batch, *, model, field: str, label_field: str):
    logits, _ = model.apply(variables, batch[field])
    if logits.ndim != 2:
        raise ValueError(f"accuracy: the model returned logits of shape {logits.shape}, not "
                         "(batch, classes)")
    labels = batch[label_field].astype(jnp.int32)
    w = batch["example_mask"]
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * w)
    nll = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels) * w)
    return correct, nll, jnp.sum(w)


def evaluate(state, ctx, *, field: str = "image", label_field: str = "label",
             prefix: str = "") -> dict[str, float]:
    """{"<prefix>accuracy", "<prefix>nll"} on the eval split.

    Args:
      state: the train state. ctx: the trainer's `EvalContext`.
      field, label_field: the batch's input and label fields.
      prefix: prepended to the metric names (e.g. "test_").
    """
    variables = model_variables(state)
    correct = nll = count = 0.0
    for batch in ctx.eval_batches():
        for k in (field, label_field):
            if k not in batch:
                raise ValueError(f"accuracy: the eval batches have no field {k!r} (their "
                                 f"fields: {', '.join(sorted(batch))})")
        c, n, w = _counts(variables, {k: batch[k] for k in (field, label_field,
                                                               "example_mask")},
                          model=ctx.model, field=field, label_field=label_field)
        correct, nll, count = correct + float(c), nll + float(n), count + float(w)
    if count == 0:
        raise ValueError("accuracy: the eval split is empty")
    return {f"{prefix}accuracy": correct / count, f"{prefix}nll": nll / count}
