"""Evaluations the trainer runs: `ssl_gen.evals.<name>.evaluate(params, ctx, **kwargs)`.

Each returns a dict of float metrics (and may write files, e.g. image grids, into
`ctx.workdir`). `config.evals` maps a name to `{"every_steps": N, "kwargs": {...}}`; the
trainer runs each every N steps and at the end.
"""

from ssl_gen.evals.context import EvalContext, EvalInterrupted

__all__ = ["EvalContext", "EvalInterrupted"]
