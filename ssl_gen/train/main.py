"""Launch a run: `python -m ssl_gen.train.main --config=experiments/vae.py:digits --workdir=DIR`.

Kept tiny on purpose: everything else is `trainer.train_and_evaluate`, importable from a
notebook. Override any config field with `--config.x=y`. Multi-host: pass
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on each host, or
`--distributed` where JAX finds the cluster itself (Cloud TPU pods, SLURM).
"""

import logging
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/<name>.py:<arg>")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, plots).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "jax.distributed.initialize() with "
                                 "cluster auto-detection (TPU pods, SLURM).")
_COORD = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0.")
_NUM_PROC = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROC_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if _COORD.value or _DISTRIBUTED.value:
        # CPU hosts need a collectives backend for cross-process all-reduce (harmless on GPU/TPU).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(_COORD.value, _NUM_PROC.value, _PROC_ID.value)
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)  # not "Unable to initialize 'tpu'"
    from ssl_gen.data import DatasetNotFoundError
    from ssl_gen.train.config_check import ConfigError
    from ssl_gen.train.trainer import NonFiniteLossError, train_and_evaluate

    try:
        final = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, NonFiniteLossError, DatasetNotFoundError) as e:
        sys.exit(f"error: {e}")
    if jax.process_index() == 0:
        for k, v in sorted(final.items()):
            print(f"{k}: {v:.4f}")
        if "preempted" not in final:
            print(f"metrics, checkpoints and plots are in {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
