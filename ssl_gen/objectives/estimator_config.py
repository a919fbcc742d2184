"""The one place where a config value becomes an `ssl_gen.estimators.Estimator`, and where
an objective reads its cost."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from ssl_gen import estimators as est


def known_estimators(also: Iterable[str] = ()) -> list[str]:
    """The names a config may give: every `Estimator` factory, plus `also` (names that the
    calling objective resolves itself, e.g. "vimco" in `discrete_elbo`), sorted."""
    return sorted(set(est.FACTORIES) | set(also))


def unknown_estimator_message(name: Any, also: Iterable[str] = ()) -> str:
    """One line: the unknown name, the closest known one if any (a typo), and the known."""
    known = known_estimators(also)
    near = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {near[0]!r}? Known" if near else "; known"
    return f"unknown estimator {name!r}{hint}: {', '.join(known)}"


def make_estimator(spec: Any, *, also_known: Iterable[str] = ()) -> est.Estimator:
    """An estimator from a config value.

    Args:
      spec: an `Estimator` (returned as is), a factory name (`"pathwise"`, one of
        `est.FACTORIES`), or a mapping `{"name": "gumbel_softmax", "temperature": 0.5}`
        whose other keys are the factory's keyword arguments, except `control_variate`
        (a name or mapping for `est.control_variates.named`) and `coefficient`, which wrap
        it in `est.with_control_variate`.
      also_known: names the calling objective accepts and resolves before calling this
        (e.g. `discrete_elbo`'s "vimco"); only listed in the error for an unknown name.

    Returns:
      The estimator. An unknown name is a one-line ValueError with the closest known name
      (difflib) and the list of known ones.
    """
    if isinstance(spec, est.Estimator):
        return spec
    control, coefficient = None, 1.0
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif hasattr(spec, "get") and "name" in spec:
        kwargs = {k: v for k, v in dict(spec).items() if k != "name"}
        name = spec["name"]
        control, coefficient = kwargs.pop("control_variate", None), kwargs.pop("coefficient", 1.0)
    else:
        raise ValueError(f"estimator must be a name or a dict with 'name', got {spec!r}")
    if not isinstance(name, str) or name not in est.FACTORIES:
        raise ValueError(unknown_estimator_message(name, also_known))
    try:
        estimator = getattr(est, name)(**kwargs)
    except TypeError as e:
        raise ValueError(f"estimator {name!r}: bad arguments {kwargs}: {e}") from None
    if control is None:
        return estimator
    return est.with_control_variate(estimator, est.control_variates.named(control), coefficient)


def function_evaluations(estimator: est.Estimator, latent_shape: tuple[int, ...],
                         num_samples: int) -> int:
    """Evaluations of f per example per call of the objective, from the estimator's cost.

    Args:
      estimator: the estimator (its `cost`, see `ssl_gen.estimators.core`).
      latent_shape: one example's code, (N, C) categorical or (N,) Bernoulli.
      num_samples: K (pairs for ARM/DisARM).

    Returns:
      `estimator.evaluations(K, N, C)` (C = 2 for a Bernoulli); a one-line ValueError for an
      estimator that states no cost.
    """
    if len(latent_shape) not in (1, 2):
        raise ValueError(f"latent_shape must be (N,) or (N, C), got {tuple(latent_shape)}")
    classes = latent_shape[1] if len(latent_shape) == 2 else 2
    return estimator.evaluations(num_samples, latent_shape[0], classes)
