"""What the trainer hands an evaluation, and how an evaluation stops early."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax


class EvalInterrupted(Exception):
    """Raised inside an evaluation when the run was asked to stop (SIGTERM, Ctrl-C): the
    trainer saves a checkpoint and exits; the resumed run evaluates that step again."""


def _never() -> bool:
    return False


def model_variables(state: Mapping[str, Any]) -> dict[str, Any]:
    """The Flax variables `model.apply` takes, from a train state: its `params` (always
    `{"params": ...}`) with its non-gradient `collections` (batch statistics, codebooks)."""
    if not (isinstance(state, Mapping) and "params" in state and "collections" in state):
        keys = sorted(state)[:6] if isinstance(state, Mapping) else "-"
        raise TypeError("an evaluation takes the whole train state (a dict with 'params' "
                        f"and 'collections', as the trainer passes it); got "
                        f"{type(state).__name__} with keys {keys}")
    return {**state["params"], **state["collections"]}


class EvalContext(NamedTuple):
    """Everything an evaluation may need, nothing model-specific.

    Attributes:
      model: the Flax module.
      rng: a key for this evaluation (fixed per step, so evaluations are reproducible).
      step: the training step being evaluated.
      workdir: the run's directory (evaluations write plots under `workdir/plots`).
      eval_batches: `() -> iterator` of global device batches over the whole eval split,
        each with a float `example_mask` (1 for real examples, 0 for padding).
      train_source: random-access host source of the training split.
      eval_source: random-access host source of the eval split.
      is_main: whether this process writes files (process 0).
      progress_bar: whether long evaluations show a progress bar (`config.progress_bar`;
        shown on the main process only).
      should_stop: `() -> bool`, true once the run was asked to stop. `eval_batches` checks
        it before every batch; an evaluation with long steps of its own (chunks, one
        estimator after another) calls `check_stop()` between them.
    """

    model: Any
    rng: jax.Array
    step: int
    workdir: str
    eval_batches: Callable[[], Iterator[dict[str, jax.Array]]]
    train_source: Any
    eval_source: Any
    is_main: bool = True
    progress_bar: bool = True
    should_stop: Callable[[], bool] = _never

    def check_stop(self) -> None:
        """Raises `EvalInterrupted` if the run was asked to stop."""
        if self.should_stop():
            raise EvalInterrupted(f"evaluation at step {self.step} interrupted")
