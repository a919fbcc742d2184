"""The one command line.

    python -m ssl_gen.main --config=experiments/<name>.py:<arg> --workdir=DIR

It dispatches on the config: a config with `config.runner` is run by
`ssl_gen.runners.<runner>` (`RUNNERS`: the estimator comparison, the estimator toys, the
Chow-Liu task, the MI bounds), any other one trains through
`ssl_gen.train.trainer.train_and_evaluate`. The flags are defined here once for all of
them; `python -m ssl_gen.train.main` is kept as an alias of this command.

Override any config field with `--config.x=y`; `--print_config` prints the resolved config
and exits, `--list_variants` lists the config file's variants. Rerunning the same command
resumes the run in DIR; a changed config is refused in one line unless
`--allow_config_change` (the change is then recorded in DIR/config_history.jsonl). Ctrl-C or
SIGTERM saves a checkpoint and exits 130 / 143 (`ssl_gen.cli` lists the exit statuses).
Multi-host: pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on each
host, or `--distributed` where JAX finds the cluster itself (Cloud TPU pods, SLURM).

Kept tiny on purpose: everything is importable from a notebook (`train_and_evaluate`, each
runner's `run(config, workdir)`). Never import this module from library code: it defines
the flags.
"""

from __future__ import annotations

import difflib
import importlib

import jax
from absl import flags
from ml_collections import config_flags

from ssl_gen import cli
from ssl_gen.errors import UserError

# config.runner -> the module that runs it; each has `launch(config, workdir, *,
# allow_config_change) -> exit status` (run, then print its tables).
RUNNERS = {
    "dvae_comparison": "ssl_gen.runners.dvae_comparison",
    "estimator_toys": "ssl_gen.runners.estimator_toys",
    "chow_liu": "ssl_gen.runners.chow_liu",
    "mi_bounds": "ssl_gen.runners.mi_bounds",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/<name>.py:<arg>")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, plots, "
                               "or a runner's report.md).")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume the run in --workdir although the config differs "
    "from the one it was started with; the change is recorded in config_history.jsonl.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "jax.distributed.initialize() with "
                                 "cluster auto-detection (TPU pods, SLURM).")
_COORD = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0.")
_NUM_PROC = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROC_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config"])


class UnknownRunnerError(UserError, ValueError):
    """`config.runner` names no runner."""


def runner_module(name: str):
    """The module that runs `config.runner == name`, or a one-line error."""
    if name not in RUNNERS:
        near = difflib.get_close_matches(str(name), list(RUNNERS), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise UnknownRunnerError(f"config.runner={name!r} is not one of "
                                 f"{', '.join(RUNNERS)}{hint}")
    return importlib.import_module(RUNNERS[name])


def _train(config, workdir: str, allow_config_change: bool) -> int:
    from ssl_gen import preemption
    from ssl_gen.train.trainer import train_and_evaluate

    final = train_and_evaluate(config, workdir, allow_config_change=allow_config_change)
    if "preempted" in final:
        return preemption.exit_status(int(final.get("signal", 15)))
    if jax.process_index() == 0:
        for k, v in sorted(final.items()):
            print(f"{k}: {v:.4f}")
        print(f"metrics, checkpoints and plots are in {workdir}")
    return 0


def main(argv) -> int:
    del argv
    config = _CONFIG.value
    if cli.print_config_requested():
        cli.print_config(config)
        return 0
    if not _WORKDIR.value:
        cli.fail("--workdir is required (the run's directory: checkpoints, metrics, plots)", 2)
    runner = config.get("runner")
    module = runner_module(runner) if runner else None  # a bad name fails before any setup
    if _COORD.value or _DISTRIBUTED.value:
        # CPU hosts need a collectives backend for cross-process all-reduce (harmless on GPU/TPU).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(_COORD.value, _NUM_PROC.value, _PROC_ID.value)
    if module is not None:
        return module.launch(config, _WORKDIR.value, allow_config_change=_ALLOW_CHANGE.value)
    return _train(config, _WORKDIR.value, _ALLOW_CHANGE.value)


def run_cli() -> None:
    """The command line's entry point (also of the alias modules)."""
    cli.run(main)


if __name__ == "__main__":
    run_cli()
