"""The train step: one jitted function over a plain-dict state, with explicit shardings.

state = {"params", "opt_state", "step", "nonfinite_step"[, "estimator_state"]}. The per-step
key is the run's key folded with the step inside the jit, so a resumed run draws the same
randomness.

Objective inputs beyond (params, batch, rng), for objectives that want them (others are
called exactly as before): `step=` (the int32 step being taken, e.g. for a temperature
schedule) when the loss function declares a `step` parameter, and `estimator_state=` when
the state holds one (a stateful gradient estimator's state, e.g. a moving-average
baseline; its initial value comes from the objective module's `init_estimator_state`). Such
an objective returns the new state as `aux["estimator_state"]`: it is stored, not logged.

A non-finite loss freezes the state: that step's update (and every later one) is dropped
and `nonfinite_step` records the first bad step. The host checks it when it logs or saves
(it syncs then anyway), stops with one line naming the step, and the last checkpoint is
the last good state: nothing non-finite is ever written.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax


def init_state(params: Any, tx: optax.GradientTransformation,
               estimator_state: Any = None) -> dict[str, Any]:
    state = {
        "params": params,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "nonfinite_step": jnp.full((), -1, jnp.int32),
    }
    if estimator_state is not None:
        state["estimator_state"] = estimator_state
    return state


def objective_inputs(loss_fn: Callable, state: dict[str, Any]) -> dict[str, Any]:
    """The keyword inputs the train step gives `loss_fn` besides (params, batch, rng)."""
    try:
        declared = inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):  # a callable without a signature: the plain protocol
        declared = {}
    inputs = {"step": state["step"]} if "step" in declared else {}
    if "estimator_state" in state:
        inputs["estimator_state"] = state["estimator_state"]
    return inputs


class TrainStep:
    """`(state, batch, key) -> (state, metrics)`, compiled once per run.

    Args:
      loss_fn: `(params, batch, rng) -> (loss, aux)` (an objective with its config bound).
      tx: the optax optimizer.
      state_sharding, batch_sharding, replicated: NamedShardings (see `train.sharding`).
    The input state's buffers are donated. `num_traces` counts Python traces: a test
    asserts it stays 1 over a run.
    """

    def __init__(self, loss_fn: Callable, tx: optax.GradientTransformation, *,
                 state_sharding: Any, batch_sharding: Any, replicated: Any):
        self.num_traces = 0
        self._loss_fn, self._tx = loss_fn, tx
        self._jitted = jax.jit(
            self._step,
            in_shardings=(state_sharding, batch_sharding, replicated),
            out_shardings=(state_sharding, replicated),
            donate_argnums=(0,),
        )

    def _step(self, state, batch, key):
        self.num_traces += 1  # runs at trace time only
        rng = jax.random.fold_in(key, state["step"])
        loss_fn = functools.partial(self._loss_fn, **objective_inputs(self._loss_fn, state))
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], batch, rng)
        aux = dict(aux)
        estimator_state = aux.pop("estimator_state", None)
        if ("estimator_state" in state) != (estimator_state is not None):
            raise ValueError("objective: a train state with an estimator_state needs the loss "
                             "to return aux['estimator_state'], and only then")
        updates, opt_state = self._tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        ok = jnp.isfinite(loss) & (state["nonfinite_step"] < 0)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        new_state = {
            "params": keep(params, state["params"]),
            "opt_state": keep(opt_state, state["opt_state"]),
            "step": state["step"] + 1,
            "nonfinite_step": jnp.where(
                ok | (state["nonfinite_step"] >= 0), state["nonfinite_step"], state["step"]),
        }
        if estimator_state is not None:
            new_state["estimator_state"] = keep(estimator_state, state["estimator_state"])
        metrics = {
            "loss": loss,
            **aux,
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(params),
        }
        return new_state, metrics

    def __call__(self, state, batch, key):
        return self._jitted(state, batch, key)

    def lower(self, state, batch, key):
        return self._jitted.lower(state, batch, key)
