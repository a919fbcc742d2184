"""Helpers for experiment configs (ml_collections only; configs never import ssl_gen)."""

import difflib

import ml_collections


def parse_arg(arg, **defaults):
    """'digits,runlocal,steps=100' -> ConfigDict(digits=True, runlocal=True, steps=100).

    Every key must be one of `defaults` (their types convert the given strings), so a typo
    in the `:arg` part of `--config=experiments/x.py:arg` is a one-line error.
    """
    out = ml_collections.ConfigDict(dict(defaults))
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            near = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"config arg {key!r} is not one of {sorted(defaults)}{hint}")
        if not value:
            out[key] = True
        elif isinstance(defaults[key], bool):
            out[key] = value.lower() in ("1", "true", "yes")
        else:
            out[key] = type(defaults[key])(value)
    return out
