"""The one place where a config value becomes an `ssl_gen.estimators.Estimator`."""

from __future__ import annotations

from typing import Any

from ssl_gen import estimators as est


def make_estimator(spec: Any) -> est.Estimator:
    """An estimator from a config value.

    Args:
      spec: an `Estimator` (returned as is), a factory name (`"pathwise"`), or a mapping
        `{"name": "gumbel_softmax", "temperature": 0.5}` whose other keys are the factory's
        keyword arguments.

    Returns:
      The estimator. An unknown name is a one-line ValueError listing the known ones.
    """
    if isinstance(spec, est.Estimator):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif hasattr(spec, "get") and "name" in spec:
        kwargs = {k: v for k, v in dict(spec).items() if k != "name"}
        name = spec["name"]
    else:
        raise ValueError(f"estimator must be a name or a dict with 'name', got {spec!r}")
    factory = getattr(est, str(name), None)
    known = sorted(n for n in est.__all__ if n.islower() and callable(getattr(est, n)))
    if factory is None or not callable(factory) or name not in est.__all__:
        raise ValueError(f"unknown estimator {name!r}; known: {', '.join(known)}")
    try:
        out = factory(**kwargs)
    except TypeError as e:
        raise ValueError(f"estimator {name!r}: bad arguments {kwargs}: {e}") from None
    if not isinstance(out, est.Estimator):
        raise ValueError(f"{name!r} is not an estimator factory; known: {', '.join(known)}")
    return out
