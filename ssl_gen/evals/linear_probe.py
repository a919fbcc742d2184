r"""Linear probe: a linear classifier trained on frozen features, as MAE's linear probing.

MAE (He et al. 2022, Sec. A.2 and `main_linprobe.py`) puts a BatchNorm without affine
parameters (eps 1e-6) in front of the linear head and trains only the head: cross-entropy,
LARS, base lr 0.1 x batch / 256, no weight decay, 90 epochs with 10 of linear warmup then
cosine decay, the head initialized N(0, 0.01) (truncated). The BatchNorm matters because
features of different methods differ wildly in scale. Here the features are frozen and
computed once, so the normalization is their training-split mean and variance (what
BatchNorm's running statistics converge to; eps 1e-6), applied to both splits; the head is
then trained for `epochs` epochs of shuffled mini-batches (a fixed seed; the last partial
batch of an epoch is dropped, so one jitted `lax.scan` runs the whole fit) with optax
(`optimizer`: "sgd" with momentum 0.9 (default: the problem is convex and tiny), "lars" as
MAE, or "adam"), the warmup-cosine schedule per step, and its accuracy is measured on the
eval split.

Reported: `linear_probe_acc` (and `linear_probe_train_acc`, to tell under- from
over-fitting), next to the same probe on raw pixels and on the randomly initialized
encoder (`_pixels`, `_random_init`; `ssl_gen.evals.representation`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_gen.evals import representation as rep

OPTIMIZERS = ("sgd", "lars", "adam")


def _optimizer(name: str, schedule, weight_decay: float) -> optax.GradientTransformation:
    if name == "lars":
        return optax.lars(schedule, weight_decay=weight_decay, momentum=0.9)
    if name == "adam":
        return optax.adamw(schedule, weight_decay=weight_decay)
    tx = optax.sgd(schedule, momentum=0.9)
    return optax.chain(optax.add_decayed_weights(weight_decay), tx) if weight_decay else tx


@functools.partial(jax.jit, static_argnames=("num_classes", "epochs", "batch_size",
                                             "optimizer", "warmup_epochs",
                                             "weight_decay"))
def fit(x, y, key, *, num_classes: int, epochs: int, batch_size: int, learning_rate,
        weight_decay, optimizer: str = "sgd", warmup_epochs: int = 0):
    """A linear head (W (D, C), b (C,)) trained by cross-entropy on standardized x (N, D),
    labels y (N,). Returns (params, final training loss)."""
    n, d = x.shape
    steps_per_epoch = max(n // batch_size, 1)
    b = min(batch_size, n)
    total = epochs * steps_per_epoch
    unit = optax.warmup_cosine_decay_schedule(
        0.0, 1.0, warmup_epochs * steps_per_epoch, max(total, warmup_epochs * steps_per_epoch + 1))
    schedule = lambda count: learning_rate * unit(count)  # lr may be traced
    tx = _optimizer(optimizer, schedule, weight_decay)
    k_init, k_data = jax.random.split(key)
    params = {"w": 0.01 * jax.random.truncated_normal(k_init, -2.0, 2.0, (d, num_classes)),
              "b": jnp.zeros((num_classes,))}

    def loss_fn(p, xb, yb):
        logits = xb @ p["w"] + p["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def epoch(carry, k):
        perm = jax.random.permutation(k, n)[:steps_per_epoch * b].reshape(steps_per_epoch, b)

        def step(c, idx):
            p, s = c
            loss, g = jax.value_and_grad(loss_fn)(p, x[idx], y[idx])
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        carry, losses = jax.lax.scan(step, carry, perm)
        return carry, losses[-1]

    (params, _), losses = jax.lax.scan(epoch, (params, tx.init(params)),
                                       jax.random.split(k_data, epochs))
    return params, losses[-1]


def _accuracy(params, x, y) -> float:
    pred = np.asarray(jnp.argmax(jnp.asarray(x) @ params["w"] + params["b"], -1))
    return float(np.mean(pred == y))


def probe(train: rep.Split, test: rep.Split, *, num_classes: int, epochs: int = 90,
          batch_size: int = 256, base_lr: float = 0.1, weight_decay: float = 0.0,
          optimizer: str = "sgd", warmup_epochs: int = 10, seed: int = 0
          ) -> tuple[float, float]:
    """(test accuracy, train accuracy) of the linear probe on these features; the learning
    rate is base_lr x batch_size / 256 (MAE's scaling rule)."""
    xtr, xte = rep.standardize(train.x, test.x)
    b = min(batch_size, len(xtr))
    params, _ = fit(jnp.asarray(xtr), jnp.asarray(train.y), jax.random.key(seed),
                    num_classes=num_classes, epochs=int(epochs), batch_size=b,
                    learning_rate=base_lr * b / 256, weight_decay=float(weight_decay),
                    optimizer=optimizer, warmup_epochs=min(int(warmup_epochs), int(epochs)))
    return _accuracy(params, xte, test.y), _accuracy(params, xtr, train.y)


def evaluate(state, ctx, *, epochs: int = 90, batch_size: int = 256, base_lr: float = 0.1,
             weight_decay: float = 0.0, optimizer: str = "sgd", warmup_epochs: int = 10,
             seed: int = 0, field: str = "image", label_field: str = "label",
             num_train: int | None = None, num_test: int | None = None,
             feature_batch_size: int = 256, baselines: bool = True,
             prefix: str = "") -> dict[str, float]:
    """`linear_probe_acc` and `linear_probe_train_acc`, with their baselines.

    Args:
      state: the train state. ctx: the trainer's `EvalContext`.
      epochs, batch_size, base_lr, weight_decay, optimizer, warmup_epochs, seed: the
        probe's training (module docstring; lr = base_lr x batch_size / 256).
      field, label_field, num_train, num_test, baselines, prefix: as `few_shot.evaluate`;
        feature_batch_size: the feature-extraction batch size.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"linear_probe: optimizer={optimizer!r} is not one of {OPTIMIZERS}")
    if epochs < 1 or batch_size < 1 or base_lr <= 0:
        raise ValueError(f"linear_probe: epochs and batch_size must be >= 1 and base_lr > 0, "
                         f"got {epochs!r}, {batch_size!r}, {base_lr!r}")
    sets = rep.feature_sets(state, ctx, field=field, label_field=label_field,
                            num_train=num_train, num_test=num_test,
                            batch_size=feature_batch_size, baselines=baselines,
                            who="linear_probe")
    c = rep.num_classes(sets)
    out = {}
    for suffix, fs in sets.items():
        acc, train_acc = probe(fs.train, fs.test, num_classes=c, epochs=epochs,
                               batch_size=batch_size, base_lr=base_lr,
                               weight_decay=weight_decay, optimizer=optimizer,
                               warmup_epochs=warmup_epochs, seed=seed)
        out[f"{prefix}linear_probe_acc{suffix}"] = acc
        out[f"{prefix}linear_probe_train_acc{suffix}"] = train_acc
    return out
