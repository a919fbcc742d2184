"""Optimizers and learning-rate schedules from config, through optax.

config.optimizer fields (every one optional; the defaults are today's behaviour):
  name: "adam" | "adamw" | "sgd" | "lars" | "lamb"  (optax.adam, adamw, sgd, lars, lamb)
  learning_rate: peak learning rate (> 0)
  schedule: "constant" | "cosine" | "warmup_cosine" | "warmup_constant" | "linear" |
    "inverse_sqrt"
    linear: linear warmup from 0 over warmup_steps (if > 0), then linear decay to
      learning_rate * end_lr_factor at the last step.
    inverse_sqrt: lr * min(step / warmup_steps, sqrt(warmup_steps / step)); warmup_steps >= 1.
  warmup_steps: linear warmup from 0 (warmup_*, linear, inverse_sqrt schedules)
  end_lr_factor: final lr / peak lr for cosine and linear schedules
  weight_decay: decoupled weight decay (adamw, lars, lamb), L2 coefficient added to the
    gradient (sgd)
  weight_decay_mask: which leaves weight_decay applies to:
    "all" (the default: every leaf, exactly as before this option existed, so existing runs
      keep their results);
    "no_bias_norm" (recommended for transformers / ViTs): no decay on a leaf whose last path
      component is `bias` or `scale`, or whose ndim <= 1 (biases, LayerNorm/BatchNorm scales,
      scalars; the rule of timm's param_groups_weight_decay plus Flax's name `scale`);
    a list of regexes: no decay on a leaf whose '/'-joined path matches any of them (re.search).
    For lars the same mask also excludes those leaves from the trust-ratio adaptation
    (as SimCLR/BYOL's LARS does).
  b1, b2, eps: Adam / LAMB moments; momentum, nesterov: SGD / LARS
  trust_coefficient: LARS trust coefficient
  grad_clip_norm: clip by global norm before the update (None or 0: no clipping); frozen
    leaves do not count towards the norm
  groups: a list of {"pattern": regex, learning_rate: ..., weight_decay: ..., frozen: bool};
    a leaf belongs to the first group whose pattern re.search-es its '/'-joined path (e.g.
    "params/encoder/Dense_0/kernel"); a leaf matching none uses the base settings. A group's
    learning_rate is its peak, with the base schedule's shape. A frozen group's updates are 0
    (optax.set_to_zero) and it has no optimizer state. Built with optax.partition.
  layer_decay: layer-wise learning-rate decay (None or 1: none; in (0, 1)), the rule of MAE's
    param_groups_lrd (facebookresearch/mae, util/lr_decay.py): with L = num_layers blocks,
    a leaf whose path matches layer_pattern with block index i (0-based) has layer_id i + 1;
    a leaf matching layer_embed_pattern (and no block) has layer_id 0; every other leaf (the
    head, the final norm) has layer_id L + 1; its learning rate is scaled by
    layer_decay ** (L + 1 - layer_id). It multiplies a group's learning rate.
  layer_pattern: regex with one group capturing the block index (default r"blocks_(\\d+)")
  layer_embed_pattern: regex for the embeddings (default r"(?i)embed|cls_token")
  num_layers: L, the number of blocks (required with layer_decay)
  accumulate_steps: gradient accumulation with optax.MultiSteps (1: none); the mean of k
    micro-batch gradients is applied every k-th step (zero updates in between). The schedule
    then counts optimizer updates: its horizon is total_steps // accumulate_steps and
    warmup_steps are in updates.
"""

from __future__ import annotations

import difflib
import re

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adam", "adamw", "sgd", "lars", "lamb")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup_constant", "linear", "inverse_sqrt")
DECAY_MASKS = ("all", "no_bias_norm")
GROUP_KEYS = ("pattern", "learning_rate", "weight_decay", "frozen")

DEFAULTS = dict(
    name="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0, end_lr_factor=0.0,
    weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False,
    grad_clip_norm=None, weight_decay_mask="all", trust_coefficient=0.001, groups=(),
    layer_decay=None, layer_pattern=r"blocks_(\d+)", layer_embed_pattern=r"(?i)embed|cls_token",
    num_layers=None, accumulate_steps=1,
)


def _choice(value, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        near = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"config.optimizer.{where}={value!r} is not one of "
                         f"{', '.join(choices)}{hint}")


def _number(out: dict, key: str, ok, rule: str, where: str = "config.optimizer") -> None:
    v = out[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
        raise ValueError(f"{where}.{key}={v!r} must be {rule}")


def _unknown(keys, known, where: str) -> None:
    unknown = sorted(set(keys) - set(known))
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(known), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f"; known: {sorted(known)}"
        raise ValueError(f"{where}: unknown key {unknown[0]!r}{hint}")


def _regex(value, where: str, groups: int | None = None) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{where}={value!r} must be a regex string")
    try:
        compiled = re.compile(value)
    except re.error as e:
        raise ValueError(f"{where}={value!r} is not a valid regex: {e}") from None
    if groups is not None and compiled.groups != groups:
        raise ValueError(f"{where}={value!r} must have exactly {groups} capturing group")


def _groups(value) -> list[dict]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"config.optimizer.groups={value!r} must be a list of dicts")
    out = []
    for i, g in enumerate(value):
        where = f"config.optimizer.groups[{i}]"
        if not hasattr(g, "keys"):
            raise ValueError(f"{where}={g!r} must be a dict with a 'pattern'")
        g = dict(g)
        _unknown(g, GROUP_KEYS, where)
        if "pattern" not in g:
            raise ValueError(f"{where}: missing key 'pattern'")
        _regex(g["pattern"], f"{where}.pattern")
        if "learning_rate" in g:
            _number(g, "learning_rate", lambda v: v > 0, "a number > 0", where)
        if "weight_decay" in g:
            _number(g, "weight_decay", lambda v: v >= 0, "a number >= 0", where)
        if not isinstance(g.get("frozen", False), bool):
            raise ValueError(f"{where}.frozen={g['frozen']!r} must be True or False")
        out.append(g)
    return out


def _cfg(cfg) -> dict:
    """The optimizer settings with defaults filled in; a one-line ValueError for a bad one."""
    _unknown(cfg, DEFAULTS, "config.optimizer")
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
    _number(out, "trust_coefficient", lambda v: v > 0, "a number > 0")
    if out["grad_clip_norm"] is not None:
        _number(out, "grad_clip_norm", lambda v: v >= 0, "None, 0 (no clipping) or > 0")
    if out["schedule"] == "inverse_sqrt" and out["warmup_steps"] < 1:
        raise ValueError("config.optimizer.warmup_steps must be >= 1 for schedule "
                         "'inverse_sqrt'")
    mask = out["weight_decay_mask"]
    if isinstance(mask, (list, tuple)):
        for i, r in enumerate(mask):
            _regex(r, f"config.optimizer.weight_decay_mask[{i}]")
        out["weight_decay_mask"] = tuple(mask)
    else:
        _choice(mask, DECAY_MASKS + ("<list of regexes>",), "weight_decay_mask")
    out["groups"] = _groups(out["groups"])
    _number(out, "accumulate_steps", lambda v: v >= 1 and v == int(v), "an int >= 1")
    _regex(out["layer_pattern"], "config.optimizer.layer_pattern", groups=1)
    _regex(out["layer_embed_pattern"], "config.optimizer.layer_embed_pattern")
    if out["layer_decay"] is not None:
        _number(out, "layer_decay", lambda v: 0 < v <= 1, "None or in (0, 1]")
        if out["layer_decay"] != 1:
            if out["num_layers"] is None:
                raise ValueError("config.optimizer.num_layers (the number of blocks) is "
                                 "required with layer_decay")
            _number(out, "num_layers", lambda v: v >= 1 and v == int(v), "an int >= 1")
    return out


def check_config(cfg) -> None:
    """Raises a one-line ValueError if config.optimizer is not valid (nothing is built)."""
    _cfg(cfg)


def _schedule(c: dict, total_steps: int) -> optax.Schedule:
    lr, warm = c["learning_rate"], c["warmup_steps"]
    if c["schedule"] == "constant":
        return optax.constant_schedule(lr)
    if c["schedule"] == "warmup_constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, max(warm, 1)), optax.constant_schedule(lr)], [warm])
    if c["schedule"] == "cosine":
        return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=c["end_lr_factor"])
    if c["schedule"] == "linear":
        decay = optax.linear_schedule(lr, lr * c["end_lr_factor"], max(total_steps - warm, 1))
        if not warm:
            return decay
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), decay], [warm])
    if c["schedule"] == "inverse_sqrt":
        def inverse_sqrt(step):
            step = jnp.asarray(step, jnp.float32)
            return lr * jnp.minimum(step / warm, jnp.sqrt(warm / jnp.maximum(step, 1.0)))
        return inverse_sqrt
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warm, max(total_steps, warm + 1), end_value=lr * c["end_lr_factor"])


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
    """The learning-rate schedule over `total_steps` optimizer updates."""
    return _schedule(_cfg(cfg), total_steps)


def path_str(path) -> str:
    """A jax key path as the '/'-joined string the patterns match, e.g. 'params/Dense_0/bias'."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _decay_mask(spec):
    """None (decay every leaf, optax's default) or a callable params -> tree of bools."""
    if spec == "all":
        return None
    if spec == "no_bias_norm":
        def keep(path, x):
            return not (jnp.ndim(x) <= 1 or path_str(path).split("/")[-1] in ("bias", "scale"))
    else:
        def keep(path, x):
            return not any(re.search(r, path_str(path)) for r in spec)
    return lambda params: jax.tree_util.tree_map_with_path(keep, params)


def _base_tx(c: dict, lr, mask) -> optax.GradientTransformation:
    if c["name"] == "adam":
        return optax.adam(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"])
    if c["name"] == "adamw":
        return optax.adamw(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"],
                           weight_decay=c["weight_decay"], mask=mask)
    if c["name"] == "lamb":
        return optax.lamb(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"],
                          weight_decay=c["weight_decay"], mask=mask)
    if c["name"] == "lars":
        m = True if mask is None else mask
        return optax.lars(lr, weight_decay=c["weight_decay"], weight_decay_mask=m,
                          trust_coefficient=c["trust_coefficient"], trust_ratio_mask=m,
                          momentum=c["momentum"], nesterov=c["nesterov"])
    tx = optax.sgd(lr, momentum=c["momentum"] or None, nesterov=c["nesterov"])
    if c["weight_decay"]:
        tx = optax.chain(optax.add_decayed_weights(c["weight_decay"], mask=mask), tx)
    return tx


def _scaled(schedule, factor: float):
    return lambda step: schedule(step) * factor


def param_labels(cfg):
    """params -> tree of labels: 'frozen', or '<group index or base>:<layer_id or ->'."""
    c = _cfg(cfg)
    groups, decay = c["groups"], c["layer_decay"] not in (None, 1)

    def label(path, x):
        p = path_str(path)
        g = next((i for i, grp in enumerate(groups) if re.search(grp["pattern"], p)), None)
        if g is not None and groups[g].get("frozen", False):
            return "frozen"
        return f"{'base' if g is None else g}:{_layer_id(c, p) if decay else '-'}"

    return lambda params: jax.tree_util.tree_map_with_path(label, params)


def _layer_id(c: dict, path: str) -> int:
    n = c["num_layers"]
    m = re.search(c["layer_pattern"], path)
    if m:
        i = int(m.group(1))
        if i >= n:
            raise ValueError(f"config.optimizer.num_layers={n} but {path!r} is block {i}")
        return i + 1
    return 0 if re.search(c["layer_embed_pattern"], path) else n + 1


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
    """The optax transformation described by config.optimizer (see the module docstring)."""
    c = _cfg(cfg)
    k = int(c["accumulate_steps"])
    horizon = total_steps // k if k > 1 else total_steps
    mask = _decay_mask(c["weight_decay_mask"])
    groups, decay = c["groups"], c["layer_decay"] not in (None, 1)
    frozen = any(g.get("frozen", False) for g in groups)
    if not groups and not decay:
        tx = _base_tx(c, _schedule(c, horizon), mask)
    else:
        transforms = {"frozen": optax.set_to_zero()}
        layers = range(int(c["num_layers"]) + 2) if decay else ["-"]
        for g, grp in [("base", {})] + list(enumerate(groups)):
            if grp.get("frozen", False):
                continue
            sub = {**c, **{key: grp[key] for key in ("learning_rate", "weight_decay")
                           if key in grp}}
            sched = _schedule(sub, horizon)
            for lid in layers:
                lr = sched
                if decay:
                    lr = _scaled(sched, c["layer_decay"] ** (c["num_layers"] + 1 - lid))
                transforms[f"{g}:{lid}"] = _base_tx(sub, lr, mask)
        tx = optax.partition(transforms, param_labels(cfg))
    if c["grad_clip_norm"]:
        tx = optax.chain(optax.clip_by_global_norm(c["grad_clip_norm"]), tx)
        if frozen:
            # Zero the frozen gradients first: they do not count towards the clipping norm.
            labels = param_labels(cfg)
            is_frozen = lambda p: jax.tree.map(lambda lab: lab == "frozen", labels(p))
            tx = optax.chain(optax.masked(optax.set_to_zero(), is_frozen), tx)
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
    return tx
