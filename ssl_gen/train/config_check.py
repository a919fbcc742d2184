"""Config validation: every bad key or value is a one-line `ConfigError` before compiling.

The trainer calls `validate(config)` first thing. It checks the top-level keys (with a
"did you mean" for typos), the types and ranges of the loop settings, and that
`model.name`, `objective.name` and each eval name resolve to modules whose signatures
accept the configured kwargs.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from typing import Any

from ssl_gen.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration mistake, said in one line."""


# key -> (required, check, what a valid value is) for the top level of a training config.
_POSITIVE = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
_NONNEG = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
_INT1, _INT0 = "an int >= 1", "an int >= 0"
TOP_LEVEL = {
    "seed": (True, lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
    "dataset": (True, None, ""),
    "batch_size": (True, _POSITIVE, _INT1),
    "eval_batch_size": (True, _POSITIVE, _INT1),
    "num_train_steps": (True, _NONNEG, _INT0),
    "model": (True, None, ""),
    "objective": (True, None, ""),
    "optimizer": (True, None, ""),
    "evals": (False, None, ""),
    "log_every_steps": (True, _POSITIVE, _INT1),
    "checkpoint_every_steps": (True, _POSITIVE, _INT1),
    "keep_checkpoints": (True, _POSITIVE, _INT1),
    "num_devices": (False, lambda v: v is None or _POSITIVE(v), "None (all) or an int >= 1"),
    "progress_bar": (False, lambda v: isinstance(v, bool), "True or False"),
    # batches built ahead on a host thread (0: none)
    "prefetch": (False, _NONNEG, _INT0),
    # per-part settings of a multi-part objective (ssl_gen.train.objective)
    "parts": (False, None, ""),
    # start from another run's checkpoint or a weight file (ssl_gen.train.init)
    "init_from": (False, None, ""),
    # the train state's layout over the devices (ssl_gen.train.sharding)
    "sharding": (False, lambda v: v in ("replicated", "fsdp"), "'replicated' or 'fsdp'"),
    "fsdp_min_size": (False, _POSITIVE, _INT1),
}
# weights: None (the trained parameters) or the '/'-path of a copy in the state whose
# structure is the parameters' (e.g. "extra/ema": an EMA or momentum copy); the trainer
# passes the eval a state whose "params" are those (`trainer.state_view`).
EVAL_KEYS = {"module", "every_steps", "kwargs", "final_kwargs", "weights"}


def _unknown(keys, known, where: str) -> None:
    for k in keys:
        if k not in known:
            near = difflib.get_close_matches(k, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known: {sorted(known)}"
            raise ConfigError(f"{where}: unknown key {k!r}{hint}")


def import_symbol(package: str, name: Any, attr: str, where: str):
    """`package.name.attr`, or a one-line ConfigError naming the config field `where`."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{where}={name!r} must be a module name in {package}")
    try:
        module = importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith(f"{package}.{name}"):
            raise ConfigError(f"{where}={name!r}: there is no module {package}.{name}") from None
        raise
    if not hasattr(module, attr):
        raise ConfigError(f"{where}={name!r}: {package}.{name} has no {attr}")
    return getattr(module, attr)


def _check_kwargs(fn, kwargs, where: str, skip=()) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
             and n not in skip]
    _unknown(list(kwargs), known, where)


def model_class(config):
    return import_symbol("ssl_gen.models", config.model.get("name"), "Model", "config.model.name")


def validate(config) -> None:
    """Raises `ConfigError` with one line for the first mistake found."""
    _unknown(list(config), list(TOP_LEVEL), "config")
    for key, (required, check, rule) in TOP_LEVEL.items():
        if key not in config:
            if required:
                raise ConfigError(f"config: missing key {key!r}")
            continue
        if check is not None and not check(config[key]):
            raise ConfigError(f"config.{key}={config[key]!r} must be {rule}")
    from ssl_gen.train import optim  # lazy: keeps this module free of optax at import

    try:
        optim.check_config(config.optimizer)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    from ssl_gen import data  # lazy: tfds is heavy to import

    try:  # keys, preprocess ops, the old binarization keys (ssl_gen.data.inputs)
        data.check_config(config.dataset)
    except ValueError as e:
        raise ConfigError(str(e)) from None

    cls = model_class(config)
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
    _unknown(list(config.model.get("kwargs", {})), fields, "config.model.kwargs")
    _unknown(list(config.model), ["name", "kwargs", "input_key"], "config.model")
    key = config.model.get("input_key", "image")
    if not (isinstance(key, str) and key):
        raise ConfigError(f"config.model.input_key={key!r} must be the name of the batch field "
                          "the model reads (e.g. 'image', 'x', 'tokens')")

    from ssl_gen.train import init as init_lib  # lazy: both import ConfigError from here
    from ssl_gen.train import objective as objective_lib

    objective_lib.check_config(config)
    init_lib.check(config.get("init_from"), model_name=config.model.get("name"))

    for name, ev in (config.get("evals") or {}).items():
        _unknown(list(ev), sorted(EVAL_KEYS), f"config.evals.{name}")
        fn = import_symbol("ssl_gen.evals", ev.get("module", name), "evaluate",
                     f"config.evals.{name}.module")
        for kw in ("kwargs", "final_kwargs"):
            _check_kwargs(fn, ev.get(kw) or {}, f"config.evals.{name}.{kw}",
                          skip=("params", "state", "ctx"))
        every = ev.get("every_steps", 0)
        if not _NONNEG(every):
            raise ConfigError(f"config.evals.{name}.every_steps={every!r} must be an int >= 0")
