"""Two real JAX processes on localhost train like one process with the same devices.

`python -m ssl_gen.train.main ... --coordinator_address=127.0.0.1:PORT --num_processes=2
--process_id=i` with 2 fake CPU devices each (4 global devices, gloo collectives; each
process reads its own half of every global batch), against one process with 4 devices, same
config. Both write checkpoints into their (local) workdir; the 2-process run shares one.
"""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ssl_gen.train import trainer
from tests.train.conftest import ROOT, restore_newest, runlocal_config

STEPS = 100
EVERY = 50
LOG = 10
TIMEOUT = 400  # seconds for all three processes; a hang fails the test instead of blocking CI
OVERRIDES = {
    "num_train_steps": STEPS,
    "checkpoint_every_steps": EVERY,
    "log_every_steps": LOG,
    "progress_bar": False,
    "evals.iwae.every_steps": 0,
    "evals.iwae.final_kwargs.num_samples": 1,  # cheap final eval (k=1 = ELBO's program)
    "evals.iwae.final_kwargs.chunk_size": 1,
}
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(data_dir):
    return runlocal_config(data_dir, OVERRIDES)


def _launch(config_file, workdir, data_dir, devices, log_path, *extra):
    cmd = [sys.executable, "-m", "ssl_gen.train.main", f"--config={config_file}:digits,runlocal",
           f"--workdir={workdir}", *extra]
    cmd += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    env = {**os.environ, "TFDS_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "TFDS_DISPLAY_PROGRESS_BAR": "0",
           # Compiling dominates these tiny runs (as in tests/conftest.py); same for both.
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    # Output to a file, not a pipe: a full pipe would block a worker, and with it the other
    # one at its next collective.
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _read(path):
    with open(path) as f:
        return f.read()


def _train_losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if r["split"] == "train"]
    return [r["step"] for r in rows], np.array([r["loss"] for r in rows])


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_devices(data_dir, tmp_path):
    # Built first: prepares the dataset once, before three processes would race to.
    abstract_state = trainer.build(_config(data_dir), str(tmp_path / "build")).abstract_state
    # The full runlocal config, image-grid eval included (it must work multi-host too).
    config_file = os.path.join(ROOT, "experiments", "vae.py")
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    address = f"127.0.0.1:{_free_port()}"
    logs = {name: str(tmp_path / f"{name}.log") for name in ("worker0", "worker1", "single")}
    procs = {}
    try:
        for i in range(2):
            procs[f"worker{i}"] = _launch(
                config_file, multi, data_dir, 2, logs[f"worker{i}"],
                f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}")
        procs["single"] = _launch(config_file, single, data_dir, 4, logs["single"])
        deadline = time.monotonic() + TIMEOUT
        for name, proc in procs.items():
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert rc == 0, f"{name} exited {rc}:\n" + _read(logs[name])[-4000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out = {name: _read(path) for name, path in logs.items()}

    # The two workers were one run: only process 0 reports, and writes metrics once.
    assert "metrics, checkpoints and plots are in" in out["worker0"]
    assert "metrics, checkpoints and plots are in" not in out["worker1"]
    assert os.path.exists(os.path.join(multi, "plots", "samples_latest.png"))  # process 0 drew
    steps, losses = _train_losses(multi)
    steps_1, losses_1 = _train_losses(single)
    assert steps == steps_1 == list(range(LOG, STEPS + 1, LOG))
    assert not np.isclose(losses_1[0], losses_1[-1], rtol=1e-2)  # it did train

    # Same global batches and keys on the same 4 devices: only the gradient/loss all-reduce
    # differs (gloo across processes vs XLA's in-process all-reduce sum in another order),
    # which moves float32 results by a few ulp (~1e-7 relative measured) compounded over
    # 100 Adam steps. rtol=1e-5 is ~100x that, and far below the ~1% change of the loss
    # between log points: a host reading the wrong slice of a batch fails it at once.
    np.testing.assert_allclose(losses, losses_1, rtol=1e-5)
    final, final_1 = (json.loads(_read(os.path.join(w, "final_metrics.json")))
                      for w in (multi, single))
    assert final.keys() == final_1.keys()
    for k in final:
        np.testing.assert_allclose(final[k], final_1[k], rtol=1e-5, err_msg=k)

    # Checkpoints: written by both processes into one local dir, restored here (8 devices).
    for w in (multi, single):
        steps_on_disk = sorted(int(n) for n in os.listdir(os.path.join(w, "checkpoints"))
                               if n.isdigit())
        assert steps_on_disk == [EVERY, STEPS], (w, steps_on_disk)
    step, state, data_state = restore_newest(abstract_state, multi)
    step_1, state_1, data_state_1 = restore_newest(abstract_state, single)
    assert step == step_1 == STEPS and data_state == data_state_1
    flat, treedef = jax.tree.flatten_with_path(state)
    flat_1, treedef_1 = jax.tree.flatten_with_path(state_1)
    assert treedef == treedef_1
    for (path, a), (_, b) in zip(flat, flat_1, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind == "f":
            # Parameters are O(0.1-1); measured differences <= 1e-7 absolute (ulp level, as
            # above). atol covers entries near zero, where relative error means nothing.
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                       err_msg=jax.tree_util.keystr(path))
        else:
            np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
