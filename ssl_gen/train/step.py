"""The train state and the one train step factory, over a plain-dict state.

```python
state = {"params": {"params": ...},  # what the optimizers update; nothing else reaches one
         "opt_state": {part: ...},   # one optimizer state per part (see train.objective)
         "collections": {...},       # non-gradient Flax collections (batch_stats, EMA codebooks)
         "extra": ...,               # objective-owned: estimator state, momentum encoder, queue
         "step": int32, "nonfinite_step": int32}
```

`init_state` splits `model.init`'s variables: the `params` collection goes to the
optimizers, every other collection to `collections`, which only the objective's
`model.apply(..., mutable=...)` changes. `TrainStep` applies the objective's parts in their
order (each a `value_and_grad` over its own parameters and its own optax update, skipped by
`lax.cond` at the steps it does not update), then its post-update. The per-step key is the
run's key folded with the step inside the jit (and with the part's index for a multi-part
objective), so a resumed run draws the same randomness.

A non-finite loss of any updating part freezes the whole state: that step's update (and
every later one) is dropped and `nonfinite_step` records the first bad step. The host checks
it when it logs or saves (it syncs then anyway), stops with one line naming the step, and
the last checkpoint is the last good state: nothing non-finite is ever written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from ssl_gen.train.objective import Objective, Part, declared


def _flat(tree) -> dict[str, Any]:
    return traverse_util.flatten_dict(tree, sep="/") if tree else {}


def _unflat(flat: Mapping[str, Any]) -> dict:
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def part_paths(part: Part, params: Any) -> list[str]:
    """The '/'-joined paths of the parameters `part` owns, in order."""
    return [p for p in _flat(params) if any(re.search(r, p) for r in part.params)]


def check_parts(parts: tuple[Part, ...], params: Any) -> dict[str, list[str]]:
    """Each part's parameter paths; ValueError for a part owning nothing or parts that overlap."""
    owned, owner = {}, {}
    for part in parts:
        paths = part_paths(part, params)
        if not paths:
            raise ValueError(f"objective part {part.name!r}: its patterns {list(part.params)} "
                             "match no parameter (paths look like 'params/<module>/kernel')")
        for p in paths:
            if p in owner:
                raise ValueError(f"objective parts {owner[p]!r} and {part.name!r} both own "
                                 f"{p!r}: make their patterns disjoint")
            owner[p] = part.name
        owned[part.name] = paths
    return owned


def _subset(params, paths) -> dict:
    flat = _flat(params)
    return _unflat({p: flat[p] for p in paths})


def split_variables(variables: Mapping[str, Any]) -> tuple[dict, dict]:
    """`model.init`'s output as ({"params": ...}, the other collections)."""
    variables = dict(variables)
    params = {"params": variables.pop("params", {})}
    variables.pop("intermediates", None)  # sown values are per call, not state
    return params, variables


def init_state(variables: Mapping[str, Any], objective: Objective,
               txs: Mapping[str, optax.GradientTransformation]) -> dict[str, Any]:
    """The initial train state from `model.init`'s variables (traceable: jit or eval_shape)."""
    params, collections = split_variables(variables)
    owned = check_parts(objective.parts, params)
    extra = objective.init_extra(params) if objective.init_extra else {}
    return {
        "params": params,
        "opt_state": {p.name: txs[p.name].init(_subset(params, owned[p.name]))
                      for p in objective.parts},
        "collections": collections,
        "extra": {} if extra is None else extra,
        "step": jnp.zeros((), jnp.int32),
        "nonfinite_step": jnp.full((), -1, jnp.int32),
    }


def loss_inputs(loss_fn: Callable, state: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword inputs the step gives `loss_fn` besides (params, batch, rng)."""
    names = declared(loss_fn)
    inputs = {k: state[k] for k in ("step", "extra", "collections") if k in names}
    return inputs


def _same_structure(new, old, what: str, part: str) -> None:
    if jax.tree.structure(new) != jax.tree.structure(old):
        raise ValueError(f"objective part {part!r}: aux[{what!r}] must keep the structure of "
                         f"state[{what!r}]")


class TrainStep:
    """`(state, batch, key) -> (state, metrics)`, compiled once per run.

    Args:
      objective: the resolved objective (`train.objective.resolve`).
      txs: one optax optimizer per part name.
      state_sharding, batch_sharding, replicated: NamedShardings (see `train.sharding`).
    The input state's buffers are donated. `num_traces` counts Python traces: a test
    asserts it stays 1 over a run.
    """

    def __init__(self, objective: Objective, txs: Mapping[str, optax.GradientTransformation],
                 *, state_sharding: Any, batch_sharding: Any, replicated: Any):
        self.num_traces = 0
        self._objective, self._txs = objective, dict(txs)
        self._jitted = jax.jit(
            self._step,
            in_shardings=(state_sharding, batch_sharding, replicated),
            out_shardings=(state_sharding, replicated),
            donate_argnums=(0,),
        )

    def _update(self, part: Part, paths: list[str], batch, rng, carry):
        """One part's loss, gradient and optimizer update: carry -> (carry, metrics)."""
        params, opt_state, collections, extra, step = carry
        flat = _flat(params)
        own = _unflat({p: flat[p] for p in paths})
        inputs = loss_inputs(part.loss_fn, {"step": step, "extra": extra,
                                            "collections": collections})

        def loss_of(own):
            merged = _unflat({**flat, **_flat(own)})
            return part.loss_fn(merged, batch, rng, **inputs)

        (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(own)
        aux = dict(aux)
        new_extra = aux.pop("extra", extra)
        new_collections = aux.pop("collections", collections)
        _same_structure(new_extra, extra, "extra", part.name)
        _same_structure(new_collections, collections, "collections", part.name)
        updates, new_opt = self._txs[part.name].update(grads, opt_state, own)
        new_own = optax.apply_updates(own, updates)
        new_params = _unflat({**flat, **_flat(new_own)})
        metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
        return (new_params, new_opt, new_collections, new_extra, step), metrics

    def _step(self, state, batch, key):
        self.num_traces += 1  # runs at trace time only
        objective = self._objective
        step = state["step"]
        rng = jax.random.fold_in(key, step)
        owned = check_parts(objective.parts, state["params"])
        params, collections, extra = state["params"], state["collections"], state["extra"]
        opt_state = dict(state["opt_state"])
        finite = jnp.asarray(True)
        metrics: dict[str, Any] = {}
        for i, part in enumerate(objective.parts):
            part_rng = rng if objective.single else jax.random.fold_in(rng, i)
            update = lambda c, part=part, r=part_rng: self._update(
                part, owned[part.name], batch, r, c)
            carry = (params, opt_state[part.name], collections, extra, step)
            if part.start_step == 0 and part.every == 1:
                active = jnp.asarray(True)
                carry, m = update(carry)
            else:
                active = (step >= part.start_step) & ((step - part.start_step) % part.every == 0)
                shapes = jax.eval_shape(update, carry)[1]
                skip = lambda c, shapes=shapes: (
                    c, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
                carry, m = jax.lax.cond(active, update, skip, carry)
            params, opt_state[part.name], collections, extra, _ = carry
            finite &= ~active | jnp.isfinite(m["loss"])
            if objective.single:
                metrics.update(m)
            else:
                metrics.update({f"{part.name}/{k}": v for k, v in m.items()})
                metrics[f"{part.name}/updated"] = active.astype(jnp.float32)
        if objective.post_update is not None:
            new_extra = objective.post_update(params, extra, step=step)
            _same_structure(new_extra, extra, "extra", "post_update")
            extra = new_extra
        ok = finite & (state["nonfinite_step"] < 0)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        new_state = {
            "params": keep(params, state["params"]),
            "opt_state": keep(opt_state, state["opt_state"]),
            "collections": keep(collections, state["collections"]),
            "extra": keep(extra, state["extra"]),
            "step": step + 1,
            "nonfinite_step": jnp.where(
                ok | (state["nonfinite_step"] >= 0), state["nonfinite_step"], step),
        }
        metrics["param_norm"] = optax.tree.norm(params)
        return new_state, metrics

    def __call__(self, state, batch, key):
        return self._jitted(state, batch, key)

    def lower(self, state, batch, key):
        return self._jitted.lower(state, batch, key)

