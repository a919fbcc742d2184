"""Training-loop overhead: time per step of the full loop over the bare jitted step.

The full loop is `trainer.train_and_evaluate` (data pipeline, device placement, logging,
progress bar, checkpoint bookkeeping, preemption polling); its own `steps_per_sec` metric is
taken from the log intervals after the first (which holds the compile). The bare step is the
same compiled `TrainStep` called on one batch already on the device. Both run in this process,
interleaved bare / full / bare, so machine noise hits both; the ratio is what to read.

  python -m benchmarks.bench_train_loop            # VAE on digits, default config
  python -m benchmarks.bench_train_loop --smoke    # seconds; what CI runs

Prints steps/s of each, the ratio (target <= 1.15) and peak host memory (and device memory
where the backend reports it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import vae as vae_experiment  # noqa: E402
from ssl_gen import data  # noqa: E402
from ssl_gen.train import trainer  # noqa: E402
from ssl_gen.train.step import TrainStep  # noqa: E402


def bare_steps_per_sec(b, steps: int) -> float:
    """Steps/s of the compiled step alone, on one batch kept on the device."""
    train_step = TrainStep(b.objective, b.txs, state_sharding=b.state_sharding,
                           batch_sharding=b.batch_sharding, replicated=b.repl)
    state = jax.jit(b.init_fn, out_shardings=b.state_sharding)(b.init_key)
    batch = data.make_global_batch(next(iter(b.pipeline)), b.batch_sharding)
    state, _ = train_step(state, batch, b.train_key)  # compile
    jax.block_until_ready(state)
    t = time.perf_counter()
    for _ in range(steps):
        state, m = train_step(state, batch, b.train_key)
    jax.block_until_ready((state, m))
    return steps / (time.perf_counter() - t)


def loop_steps_per_sec(config, workdir: str) -> float:
    """Median steps/s over the full loop's log intervals, the first (compile) excluded."""
    trainer.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rates = [r["steps_per_sec"] for r in map(json.loads, f) if r["split"] == "train"]
    return float(np.median(rates[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few hundred steps only")
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    steps = 300 if args.smoke else args.steps

    config = vae_experiment.get_config("digits")
    config.num_train_steps = steps
    config.log_every_steps = max(steps // 10, 1)
    config.checkpoint_every_steps = max(steps // 3, 1)  # bookkeeping + saves are part of it
    config.evals = {}
    config.progress_bar = True
    b = trainer.build(config, "")
    print(f"backend={jax.default_backend()} devices={jax.device_count()} "
          f"batch={config.batch_size} steps={steps}")

    bare1 = bare_steps_per_sec(b, steps)
    with tempfile.TemporaryDirectory() as workdir:
        full = loop_steps_per_sec(config, workdir)
    bare2 = bare_steps_per_sec(b, steps)
    bare = max(bare1, bare2)
    print(f"bare jitted step : {bare:9.1f} steps/s  ({bare1:.1f}, {bare2:.1f})")
    print(f"full train loop  : {full:9.1f} steps/s")
    print(f"overhead ratio   : {bare / full:9.3f}  (time per step, loop / bare; target <= 1.15)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak host memory : {peak:9.1f} MiB")
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        print(f"peak device mem  : {stats['peak_bytes_in_use'] / 2**20:9.1f} MiB")


if __name__ == "__main__":
    main()
