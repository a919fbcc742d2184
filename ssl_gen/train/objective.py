"""What the train step optimizes: an objective's parts, its extra state, its post-update.

The config names an objective module, `ssl_gen.objectives.<config.objective.name>`, called
with `model=` and `config.objective.kwargs`. The module defines one of

- `loss_fn(params, batch, rng, *, model, **kwargs) -> (loss, aux)`: one part, named
  `"model"`, that owns every parameter and uses `config.optimizer`; or
- `parts(*, model, **kwargs) -> Sequence[Part]` (`ssl_gen.objectives.parts.Part`): several
  parts (a GAN's generator and discriminator), updated one after the other in this order
  inside the one jitted step.
  Each owns the parameters whose '/'-joined path (e.g. "params/generator/Dense_0/kernel")
  matches one of its patterns (`re.search`; parts are disjoint, parameters no part owns are
  never updated), has its own loss, and its own optimizer: `config.parts.<name>.optimizer`,
  else `config.optimizer`. A part updates at step s when s >= start_step and
  (s - start_step) % every == 0 (`config.parts.<name>.start_step` / `.every` override the
  Part's); at other steps it computes nothing (`lax.cond`), and its logged metrics
  (`<name>/loss`, `<name>/grad_norm`, its aux, `<name>/updated`) are averaged over the
  steps where it updated. A later part sees the earlier parts' new parameters.

and optionally

- `init_extra(params, *, model, **kwargs) -> pytree`: the objective's own state,
  `state["extra"]`, computed from the freshly initialized `params` (a momentum encoder's
  copy, a queue, a stateful gradient estimator's state); `{}` without it;
- `post_update(params, extra, *, step, model, **kwargs) -> extra`: applied after every part
  has updated, to the new parameters (the EMA of a momentum encoder or teacher).

A loss receives, beyond (params, batch, rng), the keyword inputs it declares: `step` (the
int32 step being taken), `extra` (`state["extra"]`) and `collections` (the model's
non-gradient Flax collections, e.g. `{"batch_stats": ...}`, for `model.apply({**params,
**collections}, x, mutable=[...])`). It may return `aux["extra"]` and `aux["collections"]`,
the new values (same structure); they are stored, not logged. `params` is always
`{"params": <the Flax parameter tree>}`, so `model.apply(params, x)` works as it did.

`init_extra`, `post_update` and `parts` receive every objective kwarg: give them `**unused`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import re
from collections.abc import Callable
from typing import NamedTuple

from ssl_gen.objectives.parts import Part
from ssl_gen.train.config_check import ConfigError, _check_kwargs, _unknown, model_class

SINGLE = "model"  # the one part of a `loss_fn` objective
PART_KEYS = ("optimizer", "start_step", "every")


class Objective(NamedTuple):
    parts: tuple[Part, ...]
    init_extra: Callable | None  # params -> extra (model and kwargs bound)
    post_update: Callable | None  # (params, extra, *, step) -> extra (bound)

    @property
    def single(self) -> bool:
        return len(self.parts) == 1 and self.parts[0].name == SINGLE


def _module(config):
    name = config.objective.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"config.objective.name={name!r} must be a module name in "
                          "ssl_gen.objectives")
    try:
        module = importlib.import_module(f"ssl_gen.objectives.{name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith(f"ssl_gen.objectives.{name}"):
            raise ConfigError(f"config.objective.name={name!r}: there is no module "
                              f"ssl_gen.objectives.{name}") from None
        raise
    if not (hasattr(module, "loss_fn") or hasattr(module, "parts")):
        raise ConfigError(f"config.objective.name={name!r}: ssl_gen.objectives.{name} has "
                          "neither loss_fn nor parts")
    return module


def _int(v, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _parts(module, config, model) -> tuple[Part, ...]:
    kwargs = dict(config.objective.get("kwargs", {}))
    if not hasattr(module, "parts"):
        loss = functools.partial(module.loss_fn, model=model, **kwargs)
        return (Part(SINGLE, loss),)
    parts = tuple(module.parts(model=model, **kwargs))
    names = [p.name for p in parts]
    if len(set(names)) != len(names) or not parts:
        raise ConfigError(f"config.objective: the parts of {config.objective.name!r} need "
                          f"distinct names, got {names}")
    overrides = config.get("parts") or {}
    out = []
    for p in parts:
        o = overrides.get(p.name) or {}
        p = p._replace(start_step=o.get("start_step", p.start_step), every=o.get("every", p.every))
        if isinstance(p.params, str):
            p = p._replace(params=(p.params,))
        out.append(p)
    return tuple(out)


def resolve(config, model) -> Objective:
    """The configured objective with `model` and its kwargs bound (config checked first)."""
    module = _module(config)
    kwargs = dict(config.objective.get("kwargs", {}))
    bind = lambda name: (functools.partial(getattr(module, name), model=model, **kwargs)
                         if hasattr(module, name) else None)
    return Objective(_parts(module, config, model), bind("init_extra"), bind("post_update"))


LOSS_INPUTS = ("params", "batch", "rng", "model", "step", "extra", "collections")


def check_config(config) -> None:
    """One-line ConfigError for the objective's name, kwargs and `config.parts`."""
    from ssl_gen.train import optim

    module = _module(config)
    _unknown(list(config.objective), ["name", "kwargs"], "config.objective")
    kwargs = config.objective.get("kwargs", {})
    fn = module.parts if hasattr(module, "parts") else module.loss_fn
    _check_kwargs(fn, kwargs, "config.objective.kwargs",
                  skip=LOSS_INPUTS + ("estimator_state",))
    overrides = config.get("parts") or {}
    if not hasattr(module, "parts"):
        if overrides:
            raise ConfigError(f"config.parts: objective {config.objective.name!r} has one part "
                              "(its loss_fn); set config.optimizer instead")
        return
    model = model_class(config)(**config.model.get("kwargs", {}))
    try:
        parts = _parts(module, config, model)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config.objective: {type(e).__name__}: {e}") from None
    names = [p.name for p in parts]
    for name, o in overrides.items():
        if name not in names:
            near = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"config.parts: {config.objective.name!r} has no part {name!r} "
                              f"(its parts: {', '.join(names)}){hint}")
        _unknown(list(o), list(PART_KEYS), f"config.parts.{name}")
        if "optimizer" in o:
            try:
                optim.check_config(o["optimizer"])
            except ValueError as e:
                raise ConfigError(str(e).replace("config.optimizer",
                                                 f"config.parts.{name}.optimizer")) from None
    for p in parts:
        if not _int(p.start_step, 0):
            raise ConfigError(f"config.parts.{p.name}.start_step={p.start_step!r} must be an "
                              "int >= 0")
        if not _int(p.every, 1):
            raise ConfigError(f"config.parts.{p.name}.every={p.every!r} must be an int >= 1")
        for r in p.params:
            try:
                re.compile(r)
            except re.error as e:
                raise ConfigError(f"objective part {p.name!r}: bad parameter pattern {r!r}: "
                                  f"{e}") from None


def optimizer_config(config, part: str):
    """The optimizer settings of `part`: config.parts.<part>.optimizer, else config.optimizer."""
    o = (config.get("parts") or {}).get(part) or {}
    return o.get("optimizer", config.optimizer)


def declared(fn: Callable) -> set[str]:
    """The parameter names `fn` declares (empty for a callable without a signature)."""
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()
