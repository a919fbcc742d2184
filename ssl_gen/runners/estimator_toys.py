"""Run a gradient-estimator toy: tables and plots for experiments/estimator_toys.py.

    python -m ssl_gen.main \
        --config=experiments/estimator_toys.py:gaussian --workdir=runs/toys_gaussian

Kept short like `ssl_gen.train.main`: `run(config, workdir)` is importable (a notebook, the
tests). The workdir gets report.md (every table), rows.json and the PNG plots.
"""

from __future__ import annotations

import json
import os

import jax

from ssl_gen.errors import UserError
from ssl_gen.runners import print_tables
from ssl_gen.runners import toys as estimator_toys

RUNNER = "estimator_toys"  # the `config.runner` this module runs



class RunnerError(UserError, ValueError):
    """A bad runner setting, said in one line."""


def _int_at_least(config, key: str, low: int) -> None:
    v = config.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise RunnerError(f"config.{key}={v!r} must be an int >= {low}")


def check(config) -> None:
    """One-line `RunnerError`s for the runner settings, before anything compiles."""
    if config.get("runner") != RUNNER:
        raise RunnerError(f"config.runner is {config.get('runner')!r}, not {RUNNER!r}: "
                          "launch trainer configs with ssl_gen.train.main")
    if config.toy not in estimator_toys.TOYS:
        raise RunnerError(
            f"config.toy {config.toy!r} is not one of {sorted(estimator_toys.TOYS)}")
    _int_at_least(config, "seed", 0)
    _int_at_least(config, "num_replicas", 2)  # a variance needs two estimates
    _int_at_least(config, "time_repeats", 0)


def run(config, workdir: str) -> estimator_toys.Report:
    """Runs `config.toy`; writes report.md, rows.json and the plots into `workdir`."""
    check(config)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise RunnerError(f"--workdir={workdir}: {e.strerror or e}") from None
    out = estimator_toys.TOYS[config.toy](config, workdir, jax.random.key(config.seed))
    text = "\n\n".join(f"## {title}\n\n{table}" for title, table in out.tables.items())
    with open(os.path.join(workdir, "report.md"), "w") as fh:
        fh.write(f"# Estimator toy: {config.toy}\n\n{text}\n")
    with open(os.path.join(workdir, "rows.json"), "w") as fh:
        json.dump(estimator_toys.jsonable(out.rows), fh, indent=1)
    return out


def launch(config, workdir: str, *, allow_config_change: bool = False) -> int:
    """The command line's run (`ssl_gen.main`): the toy, then its tables printed."""
    del allow_config_change  # nothing here resumes
    out = run(config, workdir)
    files = f"report.md, rows.json and {len(out.plots)} plots"
    return print_tables(out.tables, f"{files} are in {workdir}")
