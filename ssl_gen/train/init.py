"""`config.init_from`: start a run from another run's weights, mapping named subtrees.

Spelling:

```python
config.init_from = "runs/vae"              # a path, every matching parameter (identity)
config.init_from = ml_collections.ConfigDict(dict(
    path="runs/mae",                       # what to read (kinds below)
    mapping={"encoder": "encoder"},        # {destination prefix: source prefix}; None: identity
    step=None,                             # a workdir's step to read; None: its newest
    kind=None,                             # None: told by the path; or one of KINDS
    model=None))                           # the ssl_gen.models module whose load() reads a
                                           # weight file; None: config.model.name
```

Kinds of `path` (`kind=None` tells them apart in this order):
- "weights": a file, read by `ssl_gen.models.<model>.load(path)` (e.g. `vae.save`'s
  safetensors file), which returns a variables dict `{"params": ..., "batch_stats": ...}`;
- "workdir": a run's directory (it has `checkpoints/`): its newest step, or `step`;
- "step": one checkpoint step directory (`<workdir>/checkpoints/<step>`, it has `state/`);
- "checkpoints": a directory of step directories (`<workdir>/checkpoints`): as "workdir".

What is read: the source's variables, i.e. its parameters and its non-gradient collections
(checkpoints store `state = {"params": {"params": ...}, "collections": {...}, ...}`; older ones
`state["params"]` = the whole variables dict and no collections: both read the same).
`opt_state`, `extra` and `step` start fresh: this is a new run. (A run that resumes its own
checkpoint ignores `init_from`: the trainer applies it only to a freshly initialized state.)

Mapping: paths are '/'-joined inside one collection ("encoder/Dense_0/kernel"; "" is the
root) and the same mapping applies to every collection, so a subtree's BatchNorm statistics
follow its parameters. Each destination leaf takes the longest destination prefix that
contains it; under `dst <- src`, the leaf `dst/rest` reads `src/rest`. Leaves under no
prefix start fresh. The rules, each broken one a one-line `ConfigError` saying what to do:
- a mapped source prefix must be in the source's params, a mapped destination prefix in the
  run's params, and every run parameter under a mapped prefix must have its counterpart (a
  missing subtree). Non-gradient collections load where the source has them, else start
  fresh. Identity mapping (None): parameters absent from the source start fresh, but at
  least one must load;
- shapes must agree, unless the run's model module defines the resize hook

      def resize_loaded(path: str, array: np.ndarray, target_shape: tuple[int, ...]
                        ) -> np.ndarray | None

  called for each loaded array whose shape is not the run's, with `path` the destination's
  path with its collection ("params/pos_embedding"); it returns an array of `target_shape`
  (e.g. ViT position embeddings interpolated to a new resolution) or None to decline, and
  then the mismatch is the error;
- loaded arrays take the run's dtypes (cast) and shardings.

API (the trainer's two calls):
- `check(init_from, abstract_state=None, *, model_name=None)`: raises the one-line
  `ConfigError` for a bad spec (unknown keys or kind, missing path, no such step); given the
  run's abstract state it also reads the source's shapes (a checkpoint's metadata, or the
  weight file) and checks the mapping and shapes, before anything compiles.
- `initialize_from(init_from, state, *, model_name) -> (state, report)`: the freshly
  initialized concrete state with the mapped variables loaded, and a multi-line report of
  what was loaded, resized, left fresh, and not used.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from ssl_gen.train import checkpoint
from ssl_gen.train.config_check import ConfigError

KINDS = ("weights", "workdir", "step", "checkpoints")
SPEC_KEYS = ("path", "mapping", "step", "kind", "model")
HOOK = "resize_loaded"  # the optional resize hook's name in a model module
FRESH = ("opt_state", "extra", "step")  # what a run started from init_from never loads
_STATE_KEYS = ("params", "collections")  # what is read from a checkpoint's state

Flat = dict[str, dict[str, Any]]  # collection -> {'/'-joined path: array or shape struct}


class Spec(NamedTuple):
    """A normalized `config.init_from`."""

    path: str
    mapping: dict[str, str] | None
    step: int | None
    kind: str | None
    model: str | None


class Source(NamedTuple):
    """Where a spec's variables are: `location` is a step directory or a weight file."""

    kind: str
    location: str
    description: str  # for messages: "runs/vae (checkpoint step 20)"


# ----------------------------------------------------------------------------- the spec


def spec(init_from: Any) -> Spec:
    """`config.init_from` (a path string, or a ConfigDict / dict) as a `Spec`."""
    if isinstance(init_from, (str, os.PathLike)):
        init_from = {"path": os.fspath(init_from)}
    if not hasattr(init_from, "keys"):
        raise ConfigError(f"config.init_from={init_from!r} must be a path or "
                          f"ConfigDict({', '.join(f'{k}=...' for k in SPEC_KEYS)})")
    d = dict(init_from.items())
    for k in d:
        if k not in SPEC_KEYS:
            near = difflib.get_close_matches(k, SPEC_KEYS, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known: {list(SPEC_KEYS)}"
            raise ConfigError(f"config.init_from: unknown key {k!r}{hint}")
    path = d.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"config.init_from.path={path!r} must be a path (a run's workdir, "
                          "a checkpoint step directory or a weight file)")
    mapping = d.get("mapping")
    if mapping is not None:
        items = list(dict(mapping).items()) if hasattr(mapping, "keys") else None
        if items is None or not all(isinstance(a, str) and isinstance(b, str)
                                    for a, b in items):
            raise ConfigError(f"config.init_from.mapping={mapping!r} must be None (identity) "
                              "or {destination prefix: source prefix} of '/'-joined strings")
        mapping = {_norm(a): _norm(b) for a, b in items}
    step = d.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise ConfigError(f"config.init_from.step={step!r} must be None (the newest) or an "
                          "int >= 0")
    kind = d.get("kind")
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"config.init_from.kind={kind!r} is not a kind of source: use one "
                          f"of {', '.join(repr(k) for k in KINDS)}, or None to tell it by path")
    model = d.get("model")
    if model is not None and (not isinstance(model, str) or not model.isidentifier()):
        raise ConfigError(f"config.init_from.model={model!r} must be a module name in "
                          "ssl_gen.models (whose load(path) reads the weight file)")
    return Spec(path, mapping, step, kind, model)


def _norm(prefix: str) -> str:
    return "/".join(p for p in prefix.split("/") if p)


def _steps(ckpt_dir: str) -> list[int]:
    """The finished steps in a checkpoints directory (orbax renames a step dir when done)."""
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(n) for n in os.listdir(ckpt_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(ckpt_dir, n, "state")))


def _kind_of(path: str) -> str:
    if os.path.isfile(path):
        return "weights"
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return "workdir"
    if os.path.isdir(os.path.join(path, "state")):
        return "step"
    if _steps(path):
        return "checkpoints"
    raise ConfigError(f"config.init_from.path={path!r} is a directory with no checkpoints/, "
                      "no state/ and no step directories: give a run's workdir, one of its "
                      "checkpoint steps or a weight file (or set config.init_from.kind)")


def resolve(s: Spec, *, model_name: str | None = None) -> Source:
    """The source a spec names, checked on the file system (one-line ConfigError)."""
    path = os.path.abspath(os.path.expanduser(s.path))
    if not os.path.exists(path):
        raise ConfigError(f"config.init_from.path={s.path!r} does not exist: give a run's "
                          "workdir, one of its checkpoint step directories or a weight file")
    kind = s.kind or _kind_of(path)
    if s.step is not None and kind not in ("workdir", "checkpoints"):
        raise ConfigError(f"config.init_from.step={s.step} chooses a step of a workdir, but "
                          f"{s.path!r} is a {kind} source: drop config.init_from.step")
    if kind == "weights":
        if not os.path.isfile(path):
            raise ConfigError(f"config.init_from.path={s.path!r} is not a file (kind "
                              "'weights'): give the model's weight file")
        module = s.model or model_name
        if module is not None:
            _loader(module)
        return Source(kind, path, f"{s.path} (read by ssl_gen.models.{module}.load)")
    if kind == "step":
        if not os.path.isdir(os.path.join(path, "state")):
            raise ConfigError(f"config.init_from.path={s.path!r} is not a checkpoint step "
                              "directory (it has no state/): give <workdir>/checkpoints/<step>")
        return Source(kind, path, f"{s.path} (checkpoint)")
    ckpt_dir = os.path.join(path, "checkpoints") if kind == "workdir" else path
    steps = _steps(ckpt_dir)
    if not steps:
        raise ConfigError(f"config.init_from.path={s.path!r}: {ckpt_dir} holds no finished "
                          "checkpoint (has that run saved one yet?)")
    if s.step is not None and s.step not in steps:
        raise ConfigError(f"config.init_from.step={s.step}: {ckpt_dir} has steps "
                          f"{steps}; pick one of them, or None for the newest")
    step = steps[-1] if s.step is None else s.step
    return Source(kind, os.path.join(ckpt_dir, str(step)), f"{s.path} (checkpoint step {step})")


def _module(name: str):
    try:
        return importlib.import_module(f"ssl_gen.models.{name}")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith(f"ssl_gen.models.{name}"):
            raise ConfigError(f"config.init_from.model={name!r}: there is no module "
                              f"ssl_gen.models.{name}") from None
        raise


def _loader(name: str) -> Callable[[str], Any]:
    load = getattr(_module(name), "load", None)
    if load is None:
        raise ConfigError(f"config.init_from: ssl_gen.models.{name} has no load(path) to read "
                          "a weight file; set config.init_from.model to the module that wrote "
                          "it, or start from a checkpoint")
    return load


def _hook(model_name: str | None) -> Callable | None:
    if model_name is None:
        return None
    try:
        return getattr(importlib.import_module(f"ssl_gen.models.{model_name}"), HOOK, None)
    except ModuleNotFoundError:
        return None


# ----------------------------------------------------------------------------- variables


def _key(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _flatten(tree) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
    return {"/".join(_key(e) for e in path): leaf for path, leaf in flat}


def _containers(state: Mapping[str, Any]) -> dict[str, str]:
    """collection -> the state entry holding it ("params" or "collections")."""
    out = {c: "params" for c in state["params"]}
    out.update({c: "collections" for c in (state.get("collections") or {})})
    return out


def _state_variables(state: Mapping[str, Any]) -> Flat:
    """A train state's (or a stored state's) variables, flattened per collection."""
    where = _containers(state)
    return {c: _flatten(state[where[c]][c]) for c in where}


def _read(src: Source, model_name: str | None, spec_model: str | None, *,
          shapes_only: bool) -> Flat:
    """The source's variables flattened per collection: arrays, or shapes when `shapes_only`
    and the source is a checkpoint (its metadata; a weight file is read whole either way)."""
    try:
        if src.kind == "weights":
            module = spec_model or model_name
            if module is None:
                raise ConfigError("config.init_from: a weight file needs config.model.name or "
                                  "config.init_from.model (the module whose load reads it)")
            variables = _loader(module)(src.location)
            if not hasattr(variables, "keys") or "params" not in variables:
                raise ConfigError(f"config.init_from: ssl_gen.models.{module}.load returned no "
                                  f"'params' collection from {src.location}")
            return {c: _flatten(v) for c, v in variables.items()}
        stored = (checkpoint.saved_shapes(src.location) if shapes_only
                  else checkpoint.read_state(src.location, _STATE_KEYS))
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to read the source, said in one line
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ConfigError(f"config.init_from: {src.description} does not read "
                          f"({type(e).__name__}: {first}); pick another step or source") from None
    if not isinstance(stored.get("params"), Mapping) or "params" not in stored["params"]:
        raise ConfigError(f"config.init_from: {src.description} holds no state['params']"
                          "['params']: is it an ssl_gen checkpoint?")
    return _state_variables(stored)


# ----------------------------------------------------------------------------- the plan


class Plan(NamedTuple):
    """Which destination leaves load from which source leaves, and what is left over."""

    loads: list[tuple[str, str, str, str]]  # (collection, dst path, src path, group label)
    resize: list[tuple[str, str]]  # (collection, dst path) whose shape the hook must change
    fresh: list[tuple[str, str, str]]  # (collection, dst path, why)
    unused: list[tuple[str, str]]  # (collection, src path) that nothing reads


def _under(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _tops(paths) -> list[str]:
    return sorted({p.split("/", 1)[0] for p in paths})


def _subtrees(paths) -> set[str]:
    """Every prefix of every path (the subtrees and leaves one may map)."""
    out = set()
    for p in paths:
        parts = p.split("/")
        out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def _hint(prefix: str, paths, where: str) -> str:
    near = difflib.get_close_matches(prefix, sorted(_subtrees(paths)), n=1)
    return (f"did you mean {near[0]!r}?" if near else
            f"{where} top-level subtrees: {', '.join(_tops(paths)) or 'none'}")


def plan(s: Spec, src: Flat, dst: Flat, *, description: str,
         model_name: str | None = None, has_hook: bool = False) -> Plan:
    """Matches destination leaves with source leaves; one-line ConfigError on a bad mapping,
    a missing subtree or a shape mismatch (one the model's resize hook may fix passes)."""
    identity = s.mapping is None
    mapping = {"": ""} if identity else s.mapping
    src_params, dst_params = src.get("params", {}), dst.get("params", {})
    if not identity:
        for d, sp in mapping.items():
            if sp and not any(_under(p, sp) for p in src_params):
                raise ConfigError(
                    f"config.init_from.mapping {d!r} <- {sp!r}: {description} has no params "
                    f"subtree {sp!r} ({_hint(sp, src_params, 'its')}); fix the source prefix")
            if d and not any(_under(p, d) for p in dst_params):
                raise ConfigError(
                    f"config.init_from.mapping {d!r} <- {sp!r}: the run's model has no params "
                    f"subtree {d!r} ({_hint(d, dst_params, 'its')}); fix the destination "
                    "prefix")
    by_length = sorted(mapping, key=len, reverse=True)
    loads, resize, fresh, used = [], [], [], set()
    for coll, leaves in dst.items():
        for path, leaf in leaves.items():
            prefix = next((d for d in by_length if _under(path, d)), None)
            if prefix is None:
                fresh.append((coll, path, "not mapped"))
                continue
            rest = path[len(prefix):].lstrip("/")
            src_path = _join(mapping[prefix], rest)
            got = src.get(coll, {}).get(src_path)
            if got is None:
                if coll == "params" and not identity:
                    raise ConfigError(
                        f"config.init_from: params/{path} has no counterpart {src_path!r} in "
                        f"{description} (mapping {prefix!r} <- {mapping[prefix]!r}): the "
                        "subtrees differ; map only the parts that match")
                fresh.append((coll, path, "not in the source"))
                continue
            if tuple(np.shape(got)) != tuple(np.shape(leaf)):
                if not has_hook:
                    raise ConfigError(
                        f"config.init_from: {coll}/{path} is {tuple(np.shape(got))} in "
                        f"{description} ({coll}/{src_path}) but {tuple(np.shape(leaf))} in the "
                        "run's model: use the model config the source was trained with, map "
                        "only matching subtrees in config.init_from.mapping, or give "
                        f"ssl_gen.models.{model_name} a {HOOK}(path, array, target_shape) hook")
                resize.append((coll, path))
            used.add((coll, src_path))
            group = rest.split("/", 1)[0] if not prefix else ""
            label = f"{coll}/{_join(prefix, group)} <- {coll}/{_join(mapping[prefix], group)}"
            loads.append((coll, path, src_path, label))
    if not any(c == "params" for c, *_ in loads):
        raise ConfigError(
            f"config.init_from: no parameter of {description} matches the run's model (its "
            f"subtrees: {', '.join(_tops(src_params)) or 'none'}; the model's: "
            f"{', '.join(_tops(dst_params)) or 'none'}); map them with "
            "config.init_from.mapping={destination: source}")
    unused = [(c, p) for c, leaves in src.items() for p in leaves if (c, p) not in used]
    return Plan(loads, resize, fresh, unused)


# ----------------------------------------------------------------------------- the API


def check(init_from: Any, abstract_state: Any = None, *, model_name: str | None = None) -> None:
    """Raises a one-line `ConfigError` for a bad `config.init_from` (None: nothing to check).

    With the run's `abstract_state` (ShapeDtypeStructs, e.g. the trainer's build), it also
    checks the mapping and the shapes against the source's, before anything compiles.
    """
    if init_from is None:
        return
    s = spec(init_from)
    src = resolve(s, model_name=model_name)
    if abstract_state is not None:
        plan(s, _read(src, model_name, s.model, shapes_only=True),
             _state_variables(abstract_state), description=src.description,
             model_name=model_name, has_hook=_hook(model_name) is not None)


def _place(array: np.ndarray, target: Any) -> Any:
    """`array` with the target leaf's dtype, and its sharding when it is a jax.Array."""
    array = np.asarray(array).astype(target.dtype, copy=False)
    if isinstance(target, jax.Array):
        return jax.make_array_from_callback(array.shape, target.sharding, lambda i: array[i])
    return array


def initialize_from(init_from: Any, state: Mapping[str, Any], *,
                    model_name: str | None) -> tuple[dict[str, Any], str]:
    """The freshly initialized `state` with `init_from`'s variables loaded, and the report.

    Args:
      init_from: `config.init_from` (see the module docstring).
      state: the run's concrete initial state (host side, before the first step).
      model_name: `config.model.name`: the module whose resize hook (and, for a weight
        file, whose `load`) applies.
    Returns:
      (new state, a multi-line report of what was loaded and what starts fresh). The input
      state is not changed; only its params and collections are replaced.
    """
    s = spec(init_from)
    src = resolve(s, model_name=model_name)
    source = _read(src, model_name, s.model, shapes_only=False)
    dst = _state_variables(state)
    hook = _hook(model_name)
    p = plan(s, source, dst, description=src.description, model_name=model_name,
             has_hook=hook is not None)
    new: dict[str, dict[str, Any]] = {c: {} for c in dst}
    resized = set(p.resize)
    notes = []
    for coll, path, src_path, _ in p.loads:
        array, target = np.asarray(source[coll][src_path]), dst[coll][path]
        if (coll, path) in resized:
            out = hook(f"{coll}/{path}", array, tuple(target.shape))
            if out is None or tuple(np.shape(out)) != tuple(target.shape):
                got = "declined" if out is None else f"returned {tuple(np.shape(out))}"
                raise ConfigError(
                    f"config.init_from: {coll}/{path} is {array.shape} in {src.description} "
                    f"but {tuple(target.shape)} in the run's model, and ssl_gen.models."
                    f"{model_name}.{HOOK} {got}: use the source's model config or map only "
                    "matching subtrees")
            notes.append(f"{coll}/{path}: {array.shape} -> {tuple(target.shape)}")
            array = np.asarray(out)
        new[coll][path] = _place(array, target)
    out_state = dict(state)
    where = _containers(state)
    for entry in ("params", "collections"):
        if entry not in state:
            continue
        out_state[entry] = {
            c: (_replace(state[entry][c], new[c]) if where.get(c) == entry and new[c]
                else state[entry][c]) for c in state[entry]}
    return out_state, _report(src, s, p, dst, notes)


def _replace(tree, flat_new: dict[str, Any]):
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: flat_new.get("/".join(_key(e) for e in path), leaf), tree,
        is_leaf=lambda x: hasattr(x, "shape"))


def _size(shape) -> int:
    return math.prod(shape)


def _groups(rows) -> list[tuple[str, int]]:
    """(label, count) in first-seen order."""
    counts: dict[str, int] = {}
    for label in rows:
        counts[label] = counts.get(label, 0) + 1
    return list(counts.items())


def _arrays(n: int) -> str:
    return f"{n} array{'s' if n != 1 else ''}"


def _report(src: Source, s: Spec, p: Plan, dst: Flat, resized: list[str]) -> str:
    values = sum(_size(np.shape(dst[c][path])) for c, path, *_ in p.loads)
    mapping = "identity" if s.mapping is None else repr(s.mapping)
    lines = [f"init_from {src.description}, mapping {mapping}:",
             f"  loaded {_arrays(len(p.loads))} ({values:,} values):"]
    lines += [f"    {label}: {_arrays(n)}" for label, n in _groups(r[3] for r in p.loads)]
    if resized:
        lines.append(f"  resized by the model's {HOOK}:")
        lines += [f"    {r}" for r in resized]
    fresh_values = sum(_size(np.shape(dst[c][path])) for c, path, _ in p.fresh)
    lines.append(f"  fresh (this run's initialization): {_arrays(len(p.fresh))}"
                 + (f" ({fresh_values:,} values):" if p.fresh else ""))
    lines += [f"    {label}: {_arrays(n)}" for label, n in _groups(
        f"{c}/{path.split('/', 1)[0]} ({why})" for c, path, why in p.fresh)]
    if p.unused:
        lines.append(f"  not used from the source: {_arrays(len(p.unused))}:")
        lines += [f"    {label}: {_arrays(n)}" for label, n in _groups(
            f"{c}/{path.split('/', 1)[0]}" for c, path in p.unused)]
    lines.append(f"  {', '.join(FRESH)} start fresh")
    return "\n".join(lines)
