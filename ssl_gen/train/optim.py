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

import difflib

import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup_constant")

DEFAULTS = dict(
    name="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0, end_lr_factor=0.0,
    weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False,
    grad_clip_norm=None,
)


def _choice(value, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        near = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"config.optimizer.{where}={value!r} is not one of "
                         f"{', '.join(choices)}{hint}")


def _number(out: dict, key: str, ok, rule: str) -> None:
    v = out[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
        raise ValueError(f"config.optimizer.{key}={v!r} must be {rule}")


def _cfg(cfg) -> dict:
    """The optimizer settings with defaults filled in; a one-line ValueError for a bad one."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(DEFAULTS), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f"; known: {sorted(DEFAULTS)}"
        raise ValueError(f"config.optimizer: unknown key {unknown[0]!r}{hint}")
    out = {**DEFAULTS, **dict(cfg)}
    _choice(out["name"], OPTIMIZERS, "name")
    _choice(out["schedule"], SCHEDULES, "schedule")
    _number(out, "learning_rate", lambda v: v > 0, "a number > 0")
    _number(out, "warmup_steps", lambda v: v >= 0 and v == int(v), "an int >= 0")
    _number(out, "end_lr_factor", lambda v: 0 <= v <= 1, "in [0, 1]")
    _number(out, "weight_decay", lambda v: v >= 0, "a number >= 0")
    _number(out, "b1", lambda v: 0 <= v < 1, "in [0, 1)")
    _number(out, "b2", lambda v: 0 <= v < 1, "in [0, 1)")
    _number(out, "eps", lambda v: v >= 0, "a number >= 0")
    _number(out, "momentum", lambda v: 0 <= v < 1, "in [0, 1)")
    if out["grad_clip_norm"] is not None:
        _number(out, "grad_clip_norm", lambda v: v >= 0, "None, 0 (no clipping) or > 0")
    return out


def check_config(cfg) -> None:
    """Raises a one-line ValueError if config.optimizer is not valid (nothing is built)."""
    _cfg(cfg)


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
