"""The train step: one jitted function over a plain-dict state, with explicit shardings.

state = {"params", "opt_state", "step", "nonfinite_step"}. The per-step key is the run's
key folded with the step inside the jit, so a resumed run draws the same randomness.

A non-finite loss freezes the state: that step's update (and every later one) is dropped
and `nonfinite_step` records the first bad step. The host checks it when it logs or saves
(it syncs then anyway), stops with one line naming the step, and the last checkpoint is
the last good state: nothing non-finite is ever written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax


def init_state(params: Any, tx: optax.GradientTransformation) -> dict[str, Any]:
    return {
        "params": params,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "nonfinite_step": jnp.full((), -1, jnp.int32),
    }


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
        grad_fn = jax.value_and_grad(self._loss_fn, has_aux=True)
        (loss, aux), grads = grad_fn(state["params"], batch, rng)
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
