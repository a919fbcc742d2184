"""Weight files: a model's variables as one safetensors file, keyed by '/'-joined paths.

`save(path, variables, model=...)` flattens the variables dict (`Model.init`'s output, or a
train state's params merged with its collections) into keys such as
"params/encoder/Dense_0/kernel" and "batch_stats/encoder/BatchNorm_0/mean" and writes them
with the file's metadata naming the model module that wrote it. `load(path, model=...)`
reads them back as the nested dict of numpy arrays that `Model.apply` takes, and refuses a
file written by another model module in one line. Each model module with weights to reuse
wraps these as its own `save(path, variables)` / `load(path)` (see `ssl_gen.models.vae`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from ssl_gen.errors import UserError

MODEL_KEY = "ssl_gen.model"  # the metadata entry naming the model module that wrote a file


class WeightFileError(UserError, ValueError):
    """A weight file that is missing, unreadable, or another model's."""


def _key(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def flatten(variables: Any) -> dict[str, np.ndarray]:
    """{'/'-joined path: host array} of every array leaf."""
    flat, _ = jax.tree_util.tree_flatten_with_path(variables)
    return {"/".join(_key(e) for e in path): np.ascontiguousarray(jax.device_get(leaf))
            for path, leaf in flat}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The nested dict of `flatten`'s output (every node a dict)."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, last = path.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def save(path: str, variables: Any, *, model: str) -> None:
    """Writes `variables` to the safetensors file `path` (written whole, then renamed)."""
    from safetensors.numpy import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    save_file(flatten(variables), tmp, metadata={MODEL_KEY: model, "format": "flax"})
    os.replace(tmp, path)


def load(path: str, *, model: str) -> dict[str, Any]:
    """The variables in the safetensors file `path`, as nested dicts of numpy arrays.

    A file without the `MODEL_KEY` metadata (written elsewhere) is read as it is.
    """
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise WeightFileError(f"{model}.load: no weight file {path!r}")
    try:
        with safe_open(path, framework="np") as f:
            writer = (f.metadata() or {}).get(MODEL_KEY)
            if writer is not None and writer != model:
                raise WeightFileError(
                    f"{path} holds ssl_gen.models.{writer} weights, not {model}'s: read it "
                    f"with ssl_gen.models.{writer}.load (config.init_from.model={writer!r})")
            return unflatten({k: f.get_tensor(k) for k in f.keys()})
    except SafetensorError as e:
        raise WeightFileError(f"{path} is not a readable safetensors file ({e})") from None
