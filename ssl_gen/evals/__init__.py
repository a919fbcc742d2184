"""Evaluations the trainer runs: `ssl_gen.evals.<name>.evaluate(state, ctx, **kwargs)`.

`state` is the whole train state (`ssl_gen.train.step`): an evaluation may read the EMA
weights or momentum encoder in `state["extra"]`, the codebooks in `state["collections"]`;
`model_variables(state)` gives what `model.apply` takes.

Each returns a dict of float metrics (and may write files, e.g. image grids, into
`ctx.workdir`). `config.evals` maps a name to `{"every_steps": N, "kwargs": {...}}`; the
trainer runs each every N steps and at the end.
"""

from ssl_gen.evals.context import EvalContext, EvalInterrupted, model_variables

__all__ = ["EvalContext", "EvalInterrupted", "model_variables"]
