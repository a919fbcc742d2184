"""Named variants for model dataclasses: a field's value from the variant's table unless the
caller set it explicitly (explicit keyword arguments win).

A field counts as explicit when it differs from the dataclass default, so passing the
default value itself is indistinguishable from not passing it; models whose defaults must
be overridable back to themselves use None defaults instead (as `vit` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def field(module: Any, name: str, variants: Mapping[str, Mapping[str, Any]],
          model: str, fallback: str | None = None) -> Any:
    """`module.<name>`, or the value `variants[module.variant]` gives it when not explicit;
    a one-line ValueError for an unknown variant.

    `fallback`: the variant that fills the fields when `module.variant` is None (for models
    whose variant fields default to None, so that any explicit value wins, the table's own
    included)."""
    value = getattr(module, name)
    variant = getattr(module, "variant", None) or fallback
    if variant is None:
        return value
    if variant not in variants:
        raise ValueError(f"{model}: unknown variant {variant!r}; known: {', '.join(variants)}")
    default = getattr(type(module), name)
    return variants[variant].get(name, default) if value == default else value
