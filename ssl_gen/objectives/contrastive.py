r"""Two-view image objectives: SimCLR, BYOL, MoCo v2 and v3 (`method`), on `models.contrastive`.

Every method reads `batch[views_key]`, (B, 2, H, W, C): two augmented views of each
example (the `views` preprocessing op, `ssl_gen.data.preprocess`). Both views go through
the model as one (2B, ...) train-mode batch, so BatchNorm's statistics are those of all
2B views, as in SimCLR's code.

- `simclr` (Chen, Kornblith, Norouzi & Hinton 2020, Eq. 1): NT-Xent on the projections
  z = g(f(x)), `contrastive_losses.nt_xent`: cosine similarities / `temperature`, each
  anchor's own similarity masked, both directions (all 2B anchors), each anchor's
  negatives both views of the B - 1 other examples of the *global* batch. The step is
  jitted over the global batch sharded on the "data" mesh axis (`train.step`,
  `train.sharding`): the loss is a function of global arrays, and XLA gathers the
  projections for `z @ z.T` itself, so the negatives come from every device and host
  with no gather written here (a test checks 8 devices against 1).
  Metric `contrastive_acc`: the fraction of anchors whose most similar other view is
  their positive (chance 1 / (2B - 1)).
- `byol` (Grill et al. 2020, Sec. 3.1, Eq. 2): online encoder + projector + predictor q;
  a target encoder + projector, `extra["target"]`, an exponential moving average of the
  online parameters (`init_extra`: a copy of them; `post_update`: target <- tau target +
  (1 - tau) online after every step). The loss, symmetrized as the paper (L + L~):

      L = mean_b || q(z1)/||q(z1)|| - z'2/||z'2|| ||^2 + (views swapped)
        = mean_b (2 - 2 cos(q(z1), z'2)) + mean_b (2 - 2 cos(q(z2), z'1)),

  z' the target projections under `stop_gradient`: no gradient reaches the target, and no
  negatives are used. `tau` follows the paper's schedule (Sec. 3.2)
  tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 from tau_base at k = 0 to 1 at
  k = K = `total_steps` (`tau_schedule`).
- `moco_v3` (Chen, Xie & He 2021, Alg. 1): the same online / momentum pair (the momentum
  encoder the EMA of the online encoder + projector, the same cosine schedule of
  `tau_base`), InfoNCE between the query q(z1) and the momentum keys z'2 of the other view
  over the global batch (the positive on the diagonal, `temperature` 0.2 in the paper),
  symmetric, each term scaled by 2 tau as the reference: ctr(q1, k2) + ctr(q2, k1).
  Metric `contrastive_acc` as InfoNCE's top-1.
- `moco_v2` (He et al. 2020, Alg. 1; Chen, Fan, Girshick & He 2020 for v2's MLP head, blur
  and temperature 0.2): the query q = g(f(x1)) of the first view (online encoder +
  projector, no predictor), the key k = g'(f'(x2)) of the second from the momentum
  encoder (the target, updated with a *constant* m = `tau_base`, MoCo's m, after every
  step), both unit-normalized, and a queue of `queue_size` K earlier keys as the
  negatives: logits [q.k, q.queue^T] / T, the positive at index 0, cross-entropy (one
  direction, as the paper). The queue lives in `extra`: `extra["queue"]` (K, P),
  `extra["queue_ptr"]` (where the next keys go) and `extra["keys"]` (B, P), the keys of
  this step, which the loss writes (`aux["extra"]`) and `post_update` enqueues FIFO:
  queue[ptr : ptr + B] <- keys, ptr <- (ptr + B) mod K, so K must be a multiple of the
  global batch `batch_size` B (as MoCo's code asserts). The keys are those of the global
  batch: the loss is a function of global arrays under the data-parallel jit, so every
  device's keys are enqueued (a test checks 8 devices against 1). The queue starts as
  random unit vectors, as MoCo's code. No shuffled BN here: the BatchNorm statistics are
  the global batch's (no per-device BN to leak through), as solo-learn's MoCo v2+.
  Metric `contrastive_acc`: the fraction of queries whose key beats every queue entry.

The target's BatchNorm runs in train mode on the current batch, as BYOL's reference; its
running statistics are not kept (the target is only ever used in training). Training
batches are never padded (the pipeline repeats), so there is no `example_mask` here.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from ssl_gen.objectives import contrastive_losses as cl

METHODS = ("simclr", "byol", "moco_v2", "moco_v3")
MOMENTUM = ("byol", "moco_v2", "moco_v3")  # the methods with a target / momentum encoder
PREDICTOR = ("byol", "moco_v3")  # the methods with a predictor on the online branch


def check(method, temperature, tau_base, total_steps, views_key, model=None,
          queue_size=None, batch_size=None) -> None:
    """One-line ValueError for a bad objective setting (the trainer's build surfaces it
    before anything compiles)."""
    if method not in METHODS:
        raise ValueError(f"contrastive: method={method!r} must be one of {', '.join(METHODS)}")
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float))
                                             and temperature > 0):
        raise ValueError(f"contrastive: temperature={temperature!r} must be a number > 0")
    if isinstance(tau_base, bool) or not (isinstance(tau_base, (int, float))
                                          and 0 <= tau_base <= 1):
        raise ValueError(f"contrastive: tau_base={tau_base!r} must be in [0, 1]")
    if isinstance(total_steps, bool) or not (isinstance(total_steps, int) and total_steps >= 1):
        raise ValueError(f"contrastive: total_steps={total_steps!r} must be an int >= 1 (the "
                         "run's num_train_steps, the horizon of the tau schedule)")
    if not isinstance(views_key, str):
        raise ValueError(f"contrastive: views_key={views_key!r} must be a batch field name")
    if method == "moco_v2":
        ok = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1
        if not ok(batch_size):
            raise ValueError(f"contrastive: method='moco_v2' needs batch_size={batch_size!r} "
                             "as an int >= 1 (the global batch, the keys enqueued per step)")
        if not ok(queue_size) or queue_size % batch_size:
            raise ValueError(f"contrastive: queue_size={queue_size!r} must be a positive "
                             f"multiple of batch_size={batch_size}")
    if model is not None:
        has = bool(getattr(model, "predictor_hidden", None))
        if method in PREDICTOR and not has:
            raise ValueError(f"contrastive: method={method!r} needs a predictor; set "
                             "config.model.kwargs.predictor_hidden")
        if method not in PREDICTOR and has:
            raise ValueError(f"contrastive: method={method!r} has no predictor; set "
                             "config.model.kwargs.predictor_hidden=None")


def tau_schedule(step, tau_base: float, total_steps: int) -> jax.Array:
    """BYOL's target decay at step k: 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, k <= K."""
    k = jnp.minimum(jnp.asarray(step, jnp.float32), total_steps)
    return 1.0 - (1.0 - tau_base) * (jnp.cos(math.pi * k / total_steps) + 1.0) / 2.0


def _unit(v: jax.Array) -> jax.Array:
    """v / ||v|| along the last axis (0 stays 0)."""
    return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, -1, keepdims=True), 1e-24))


def regression_loss(p: jax.Array, t: jax.Array) -> jax.Array:
    """BYOL's per-example loss ||p/||p|| - t/||t|| ||^2 = 2 - 2 cos(p, t): (B,)."""
    p, t = _unit(p.astype(jnp.float32)), _unit(t.astype(jnp.float32))
    return jnp.sum((p - t) ** 2, axis=-1)


def _two_views(batch, views_key: str) -> tuple[jax.Array, int]:
    if views_key not in batch:
        raise ValueError(f"contrastive: the batch has no {views_key!r} field (its fields: "
                         f"{', '.join(sorted(batch))}); add a {{'name': 'views', 'ops': "
                         "[...]}} op to config.dataset.preprocess")
    v = batch[views_key]
    if v.ndim < 3 or v.shape[1] != 2:
        raise ValueError(f"contrastive: batch[{views_key!r}] must be (B, 2, ...) (two views), "
                         f"got shape {v.shape}")
    b = v.shape[0]
    return jnp.concatenate([v[:, 0], v[:, 1]], axis=0), b  # (2B, ...): all first views first


def moco_v2_logits(q: jax.Array, k: jax.Array, queue: jax.Array,
                   temperature: float) -> jax.Array:
    """MoCo's (B, 1 + K) logits [q.k, q.queue^T] / T of unit q, k (B, P) and queue (K, P)."""
    q, k = _unit(q.astype(jnp.float32)), _unit(k.astype(jnp.float32))
    positive = jnp.sum(q * k, axis=-1, keepdims=True)  # (B, 1)
    return jnp.concatenate([positive, q @ queue.T], axis=1) / temperature  # (B, 1 + K)


def loss_fn(params, batch, rng, *, model, collections, extra, step, method: str = "simclr",
            temperature: float = 0.5, tau_base: float = 0.996, total_steps: int = 1000,
            views_key: str = "views", queue_size: int | None = None,
            batch_size: int | None = None) -> tuple[jax.Array, dict[str, Any]]:
    """The `method`'s loss on the two views in `batch[views_key]` (module docstring).

    Args:
      params: {"params": the online parameters}. collections: {"batch_stats": ...}.
      extra: {} (simclr) or {"target": a copy of params, the EMA} (byol, moco_v3).
      step: the step being taken (for the logged tau).
      method: "simclr" | "byol" | "moco_v3".
      temperature: NT-Xent's / InfoNCE's tau (simclr, moco_v3), > 0.
      tau_base: the target decay at step 0 (byol, moco_v3), in [0, 1].
      total_steps: K, where the decay reaches 1 (the run's num_train_steps).
      views_key: the batch field holding the (B, 2, H, W, C) views.
      queue_size: K, the number of negative keys in the queue (moco_v2).
      batch_size: the global batch B, the keys enqueued per step (moco_v2).
    """
    del rng  # the augmentations are the data pipeline's; nothing here is random
    check(method, temperature, tau_base, total_steps, views_key, model, queue_size,
          batch_size)
    if method == "moco_v2":
        return _moco_v2(params, batch, model=model, collections=collections, extra=extra,
                        temperature=temperature, tau_base=tau_base, views_key=views_key,
                        batch_size=batch_size)
    x, b = _two_views(batch, views_key)
    (z, aux), new_collections = model.apply({**params, **collections}, x, train=True,
                                            mutable=["batch_stats"])
    metrics: dict[str, Any] = {"collections": new_collections}
    if method == "simclr":
        z1, z2 = z[:b], z[b:]
        loss = cl.nt_xent(z1, z2, temperature)
        logits, labels = cl.nt_xent_logits(jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2),
                                           temperature)
        metrics["contrastive_acc"] = jnp.mean(jnp.argmax(logits, axis=1) == labels)
        return loss, metrics
    # byol / moco_v3: the target branch (encoder + projector, no predictor) on the target's
    # parameters with the online batch statistics' structure; its new statistics are dropped.
    (_, t), _ = model.apply({**extra["target"], **collections}, x, train=True,
                            mutable=["batch_stats"], method="project")
    t = jax.lax.stop_gradient(t)
    q = aux["prediction"]
    q1, q2, t1, t2 = q[:b], q[b:], t[:b], t[b:]
    if method == "byol":
        loss = jnp.mean(regression_loss(q1, t2)) + jnp.mean(regression_loss(q2, t1))
        metrics["cosine"] = 1.0 - 0.25 * jax.lax.stop_gradient(loss)  # mean cos(q, t')
    else:
        s12 = _unit(q1) @ _unit(t2).T  # (B, B) cosine similarities, positives on the diagonal
        s21 = _unit(q2) @ _unit(t1).T
        loss = 2 * temperature * (cl.info_nce_loss(s12, "diagonal", temperature)
                                  + cl.info_nce_loss(s21, "diagonal", temperature))
        metrics["contrastive_acc"] = 0.5 * (cl.contrastive_accuracy(s12)
                                            + cl.contrastive_accuracy(s21))
    metrics["tau"] = tau_schedule(step, tau_base, total_steps)
    return loss, metrics


def _moco_v2(params, batch, *, model, collections, extra, temperature, tau_base, views_key,
             batch_size):
    """MoCo v2's loss (module docstring); aux["extra"] carries this step's keys."""
    _, b = _two_views(batch, views_key)  # checks the field and its shape
    v = batch[views_key]  # (B, 2, H, W, C): the queries' views v[:, 0], the keys' v[:, 1]
    if b != batch_size:
        raise ValueError(f"contrastive: moco_v2's batch_size={batch_size} but the batch has "
                         f"{b} examples; set objective.kwargs.batch_size to the global batch")
    (_, aux), new_collections = model.apply({**params, **collections}, v[:, 0], train=True,
                                            mutable=["batch_stats"])
    (_, k), _ = model.apply({**extra["target"], **collections}, v[:, 1], train=True,
                            mutable=["batch_stats"], method="project")
    k = jax.lax.stop_gradient(_unit(k.astype(jnp.float32)))  # (B, P)
    logits = moco_v2_logits(aux["projection"], k, jax.lax.stop_gradient(extra["queue"]),
                            temperature)
    loss = cl.info_nce_loss(logits, "first")
    return loss, {"collections": new_collections, "extra": {**extra, "keys": k},
                  "contrastive_acc": cl.contrastive_accuracy(logits, "first"),
                  "tau": jnp.asarray(tau_base, jnp.float32)}


def init_extra(params, *, model, method: str = "simclr", temperature: float = 0.5,
               tau_base: float = 0.996, total_steps: int = 1000, views_key: str = "views",
               queue_size: int | None = None, batch_size: int | None = None, **unused):
    """{} for simclr; {"target": a copy of the online parameters} for byol / moco_v3; and
    for moco_v2 also the queue, random unit vectors (K, P), its pointer 0, and the (B, P)
    slot for each step's keys."""
    check(method, temperature, tau_base, total_steps, views_key, model, queue_size,
          batch_size)
    if method not in MOMENTUM:
        return {}
    extra = {"target": jax.tree.map(jnp.copy, params)}
    if method == "moco_v2":
        out = model.projector_out
        queue = jax.random.normal(jax.random.key(0), (queue_size, out), jnp.float32)
        extra.update(queue=_unit(queue), queue_ptr=jnp.zeros((), jnp.int32),
                     keys=jnp.zeros((batch_size, out), jnp.float32))
    return extra


def enqueue(queue: jax.Array, ptr: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """MoCo's FIFO: queue[ptr : ptr + B] <- keys (the oldest B out), ptr <- (ptr + B) mod K
    (K a multiple of B, so a write never wraps)."""
    queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (ptr, 0))
    return queue, (ptr + keys.shape[0]) % queue.shape[0]


def post_update(params, extra, *, step, method: str = "simclr", tau_base: float = 0.996,
                total_steps: int = 1000, **unused):
    """target <- tau_k target + (1 - tau_k) online, with the parameters just updated at step
    k (byol / moco_v3; moco_v2 with its constant m = tau_base, then this step's keys
    enqueued); simclr's empty extra unchanged."""
    if method not in MOMENTUM:
        return extra
    if method == "moco_v2":
        tau = jnp.asarray(tau_base, jnp.float32)
    else:
        tau = tau_schedule(step, tau_base, total_steps)
    target = jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o, extra["target"], params)
    extra = {**extra, "target": target}
    if method == "moco_v2":
        queue, ptr = enqueue(extra["queue"], extra["queue_ptr"], extra["keys"])
        extra.update(queue=queue, queue_ptr=ptr)
    return extra
