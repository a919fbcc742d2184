"""Optimizers and learning-rate schedules from config, through optax.

config.optimizer fields:
  name: "adam" | "adamw" | "sgd"
  learning_rate: peak learning rate (> 0)
  schedule: "constant" | "cosine" | "warmup_cosine" | "warmup_constant"
  warmup_steps: linear warmup from 0 (warmup_* schedules)
  end_lr_factor: final lr / peak lr for cosine schedules
  weight_decay: decoupled weight decay (adamw), L2 coefficient added to the gradient (sgd)
  b1, b2, eps: Adam moments; momentum, nesterov: SGD
  grad_clip_norm: clip by global norm before the update (None or 0: no clipping)
"""

from __future__ import annotations

import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup_constant")

DEFAULTS = dict(
    name="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0, end_lr_factor=0.0,
    weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False,
    grad_clip_norm=None,
)


def _cfg(cfg) -> dict:
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"config.optimizer: unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **dict(cfg)}
    if out["name"] not in OPTIMIZERS:
        raise ValueError(f"config.optimizer.name={out['name']!r}; choose one of {OPTIMIZERS}")
    if out["schedule"] not in SCHEDULES:
        raise ValueError(
            f"config.optimizer.schedule={out['schedule']!r}; choose one of {SCHEDULES}")
    if not out["learning_rate"] > 0:
        raise ValueError(f"config.optimizer.learning_rate must be > 0, got {out['learning_rate']}")
    if out["warmup_steps"] < 0:
        raise ValueError(f"config.optimizer.warmup_steps must be >= 0, got {out['warmup_steps']}")
    return out


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
    """The learning-rate schedule over `total_steps`."""
    c = _cfg(cfg)
    lr, warm = c["learning_rate"], c["warmup_steps"]
    if c["schedule"] == "constant":
        return optax.constant_schedule(lr)
    if c["schedule"] == "warmup_constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, max(warm, 1)), optax.constant_schedule(lr)], [warm])
    if c["schedule"] == "cosine":
        return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=c["end_lr_factor"])
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warm, max(total_steps, warm + 1), end_value=lr * c["end_lr_factor"])


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation described by config.optimizer (see the module docstring)."""
    c = _cfg(cfg)
    lr = make_schedule(cfg, total_steps)
    if c["name"] == "adam":
        tx = optax.adam(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"])
    elif c["name"] == "adamw":
        tx = optax.adamw(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"], weight_decay=c["weight_decay"])
    else:
        tx = optax.sgd(lr, momentum=c["momentum"] or None, nesterov=c["nesterov"])
        if c["weight_decay"]:
            tx = optax.chain(optax.add_decayed_weights(c["weight_decay"]), tx)
    if c["grad_clip_norm"]:
        tx = optax.chain(optax.clip_by_global_norm(c["grad_clip_norm"]), tx)
    return tx
