"""`Part`: one parameter subset of a multi-part objective, with its loss and update timing.

An objective module that defines `parts(*, model, **kwargs) -> list[Part]` is trained part
by part, in order, inside one step (the contract is stated in `ssl_gen.train.objective`).
Each part's optimizer comes from config (`config.parts.<name>.optimizer`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple


class Part(NamedTuple):
    """One parameter subset with its loss and update timing.

    Attributes:
      name: the part's name (`config.parts.<name>`; metrics `<name>/...`).
      loss_fn: `(params, batch, rng, **declared inputs) -> (loss, aux)`, its config bound.
      params: regexes (`re.search`) on '/'-joined parameter paths, e.g.
        `r"^params/generator/"`; the part owns every parameter one of them matches.
      start_step: the first step at which the part updates.
      every: the part updates at steps start_step, start_step + every, ...
    """

    name: str
    loss_fn: Callable
    params: Sequence[str] = (".*",)
    start_step: int = 0
    every: int = 1
