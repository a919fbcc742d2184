"""Launch a run: `python -m ssl_gen.train.main --config=experiments/vae.py:digits --workdir=DIR`.

Kept tiny on purpose: everything else is `trainer.train_and_evaluate`, importable from a
notebook. Override any config field with `--config.x=y`; `--print_config` prints the
resolved config and exits, `--list_variants` lists the config file's variants. Rerunning
the same command resumes the run in DIR; a changed config is refused in one line unless
`--allow_config_change` (the change is then recorded in DIR/config_history.jsonl).
Ctrl-C or SIGTERM saves a checkpoint and exits 130 / 143 (`ssl_gen.cli` lists the exit
statuses). Multi-host: pass `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I` on each host, or `--distributed` where JAX finds the cluster itself (Cloud
TPU pods, SLURM).
"""

import jax
from absl import flags
from ml_collections import config_flags

from ssl_gen import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/<name>.py:<arg>")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, plots).")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume the run in --workdir although the config differs "
    "from the one it was started with; the change is recorded in config_history.jsonl.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "jax.distributed.initialize() with "
                                 "cluster auto-detection (TPU pods, SLURM).")
_COORD = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0.")
_NUM_PROC = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROC_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config"])


def main(argv) -> int:
    del argv
    if cli.print_config_requested():
        cli.print_config(_CONFIG.value)
        return 0
    if not _WORKDIR.value:
        cli.fail("--workdir is required (the run's directory: checkpoints, metrics, plots)", 2)
    if _COORD.value or _DISTRIBUTED.value:
        # CPU hosts need a collectives backend for cross-process all-reduce (harmless on GPU/TPU).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(_COORD.value, _NUM_PROC.value, _PROC_ID.value)
    from ssl_gen import preemption
    from ssl_gen.train.trainer import train_and_evaluate

    final = train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                               allow_config_change=_ALLOW_CHANGE.value)
    if "preempted" in final:
        return preemption.exit_status(int(final.get("signal", 15)))
    if jax.process_index() == 0:
        for k, v in sorted(final.items()):
            print(f"{k}: {v:.4f}")
        print(f"metrics, checkpoints and plots are in {_WORKDIR.value}")
    return 0


if __name__ == "__main__":
    cli.run(main)
