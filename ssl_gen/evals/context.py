"""What the trainer hands an evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax


class EvalContext(NamedTuple):
    """Everything an evaluation may need, nothing model-specific.

    Attributes:
      model: the Flax module.
      rng: a key for this evaluation (fixed per step, so evaluations are reproducible).
      step: the training step being evaluated.
      workdir: the run's directory (evaluations write plots under `workdir/plots`).
      eval_batches: `() -> iterator` of global device batches over the whole eval split,
        each with a float `mask` (1 for real examples, 0 for padding).
      train_source: random-access host source of the training split.
      eval_source: random-access host source of the eval split.
      is_main: whether this process writes files (process 0).
      progress_bar: whether long evaluations show a progress bar (`config.progress_bar`;
        shown on the main process only).
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
