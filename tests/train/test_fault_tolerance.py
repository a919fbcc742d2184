"""Fault tolerance of the trainer: SIGKILL, SIGTERM and a corrupt newest checkpoint.

The kill tests launch `python -m ssl_gen.train.main` the way a user does, interrupt it, run
the same command again in the same workdir and compare the final train state with an
uninterrupted run of the same command (computed once per module). Every launch sees the
same 2 fake CPU devices, so the resumed run executes the same compiled program on the same
bits: the comparison is bitwise. The newest checkpoint of each run is restored here, in the
test process (8 fake devices), onto a replicated sharding: replicated arrays restore onto
any mesh unchanged, and both sides go through the same path.

The corrupt-checkpoint test trains in-process; it comes first so that the uninterrupted run
(a background process) overlaps it, and the kill tests then find their programs compiled in
this module's persistent compilation cache.
"""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ssl_gen.train import trainer
from ssl_gen.train.checkpoint import Checkpointer
from tests.train.conftest import ROOT, restore_newest, runlocal_config

# Long enough that a kill right after the first checkpoint lands mid-training: the process
# still has STEPS - EVERY steps (seconds, even on a loaded machine) to go; short enough to
# keep the five launches of this file within about a minute and a half.
STEPS = 400
EVERY = 100
LOG = 20
DEVICES = 2  # the same for every launch: bitwise reproducible (see module docstring)
TIMEOUT = 300  # seconds per launch; a hang fails the test instead of blocking CI
# The run's config: experiments/vae.py:digits,runlocal with these overrides (cheap final
# evals: k=1 makes the IWAE bound and the ELBO one compiled program).
OVERRIDES = {
    "num_train_steps": STEPS,
    "checkpoint_every_steps": EVERY,
    "log_every_steps": LOG,
    "progress_bar": False,
    "evals.iwae.every_steps": 0,
    "evals.iwae.final_kwargs.num_samples": 1,
    "evals.iwae.final_kwargs.chunk_size": 1,
    "evals.images.every_steps": 0,
}


def _config(data_dir):
    return runlocal_config(data_dir, OVERRIDES)


def _launch(workdir, env, log_name):
    """Starts the run in `workdir`; stdout and stderr go to `workdir/../<log_name>`."""
    cmd = [sys.executable, "-m", "ssl_gen.train.main",
           "--config=experiments/vae.py:digits,runlocal", f"--workdir={workdir}",
           "--verbosity=0"]  # INFO, so the resumed run logs "resumed from step N"
    cmd += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    log_path = os.path.join(os.path.dirname(workdir), log_name)
    # Output to a file, not a pipe: a full pipe would block the child.
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path
    return proc


def _output(proc):
    with open(proc.log_path) as f:
        return f.read()


def _finish(proc, timeout=TIMEOUT):
    """Waits for `proc` (killing it on timeout); returns (returncode, output)."""
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, _output(proc)


def _run(workdir, env, log_name):
    rc, out = _finish(_launch(workdir, env, log_name))
    assert rc == 0, out[-4000:]
    assert os.path.exists(os.path.join(workdir, "final_metrics.json")), out[-4000:]
    return out


def _step_dirs(workdir):
    """Finished checkpoint steps on disk (orbax writes into `<step>.orbax-checkpoint-tmp-*`
    and renames when done), listed without orbax so nothing gets cleaned up here."""
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _wait_for_first_checkpoint(proc, workdir, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"run exited ({proc.returncode}) before its first checkpoint:\n"
                        + _output(proc)[-4000:])
        if _step_dirs(workdir):
            return
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    pytest.fail(f"no checkpoint within {timeout}s:\n" + _output(proc)[-4000:])


def _train_steps(workdir):
    """The steps of the train rows of metrics.jsonl, in file order (appended by each run)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["step"] for r in rows if r["split"] == "train"]


def _restore(built, workdir):
    """(step, state, data_state) of the newest checkpoint, restored in this process."""
    return restore_newest(built.abstract_state, workdir)


def _assert_same_state(got, want):
    step, state, data_state = got
    assert step == want[0] == STEPS
    assert data_state == want[2]
    # Bitwise: same program, same device count, same inputs (see module docstring).
    flat, treedef = jax.tree.flatten_with_path(state)
    want_flat, want_treedef = jax.tree.flatten_with_path(want[1])
    assert treedef == want_treedef
    for (path, a), (_, b) in zip(flat, want_flat, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                      err_msg=jax.tree_util.keystr(path))


def _resume_and_check(workdir, env, want, built, resume_from, n_rows):
    """Reruns the command in `workdir`; it must resume from `resume_from` and end equal."""
    del n_rows
    out = _run(workdir, env, "resumed.log")
    assert f"resumed from step {resume_from} " in out, out[-4000:]
    # One row per logged step: the rows the interrupted run wrote after its checkpoint were
    # moved to metrics_superseded.jsonl when the resumed run logged those steps again.
    assert _train_steps(workdir) == list(range(LOG, STEPS + 1, LOG))
    _assert_same_state(_restore(built, workdir), want)


@pytest.fixture(scope="module")
def built(data_dir, tmp_path_factory):
    """The in-process build of the launched config (its abstract state is the restore
    target); building it also prepares the dataset once, before any launch."""
    return trainer.build(_config(data_dir), str(tmp_path_factory.mktemp("build")))


@pytest.fixture(scope="module")
def env(data_dir, tmp_path_factory):
    """The environment of every launch."""
    return {
        **os.environ, "TFDS_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}",
        "TFDS_DISPLAY_PROGRESS_BAR": "0",
        # Compiling dominates these tiny runs: skip XLA's optimization passes (as in
        # tests/conftest.py), and compile each program once for all launches of this module
        # (a persistent cache private to it). Both are the same for every launch, so all runs
        # execute the same compiled programs; the cache only saves time.
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


class _Reference:
    """The uninterrupted run, launched in the background; `result()` waits for it."""

    def __init__(self, built, env, workdir):
        self.built, self.workdir = built, workdir
        self.proc = _launch(workdir, env, "run.log")
        self._result = None

    def result(self):
        """Its final (step, state, data_state), restored here."""
        if self._result is None:
            rc, out = _finish(self.proc)
            assert rc == 0, out[-4000:]
            self._result = _restore(self.built, self.workdir)
        return self._result


@pytest.fixture(scope="module")
def reference(built, env, tmp_path_factory):
    ref = _Reference(built, env, str(tmp_path_factory.mktemp("uninterrupted") / "run"))
    yield ref
    if ref.proc.poll() is None:
        ref.proc.kill()
        ref.proc.wait()


def _corrupt(step_dir, how):
    """Truncates (or deletes) the array data files of a checkpoint; returns how many."""
    n = 0
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        if os.path.basename(root) != "d":  # OCDBT data files live in `d/` directories
            continue
        for name in files:
            path = os.path.join(root, name)
            if how == "truncate":
                os.truncate(path, os.path.getsize(path) // 2)
            else:
                os.remove(path)
            n += 1
    assert n, f"no array data files found under {step_dir}: has orbax's layout changed?"
    return n


# Failed restores leave tensorstore callbacks aimed at orbax's closed event loop; Python
# reports them as unraisable "Event loop is closed" errors. Harmless, and orbax's own.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back_to_previous(tiny_config, tmp_path, caplog,
                                                          reference):
    del reference  # not used here: requested so that it runs alongside this in-process test
    tiny_config.num_train_steps = 9  # checkpoints at 3, 6, 9 (every 3, keep 3)
    tiny_config.evals = {}  # no final evals: nothing here depends on them
    workdir = str(tmp_path)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    trainer.train_and_evaluate(tiny_config, workdir)
    assert _step_dirs(workdir) == [3, 6, 9]
    abstract = trainer.build(tiny_config, workdir).abstract_state

    # Truncated newest: restore_latest warns, sets it aside and returns the previous one.
    _corrupt(os.path.join(ckpt_dir, "9"), "truncate")
    ckpt = Checkpointer(ckpt_dir, save_every_steps=3)
    with caplog.at_level(logging.WARNING, logger="ssl_gen.train.checkpoint"):
        step, state, data_state = ckpt.restore_latest(abstract)
    ckpt.close()
    assert step == 6 and int(state["step"]) == 6
    assert data_state == {"next_batch": 6}
    assert any("checkpoint step 9" in r.getMessage() and "does not restore" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING), caplog.text
    assert _step_dirs(workdir) == [3, 6]
    assert os.listdir(os.path.join(workdir, "corrupt_checkpoints")) == ["9"]

    # Newest now half-written (its array files gone): the trainer itself falls back to step
    # 3, resumes from there (the first new log line is step 4, not 2) and finishes.
    _corrupt(os.path.join(ckpt_dir, "6"), "delete")
    caplog.clear()
    tiny_config.num_train_steps = 12  # a longer run: a config change, said explicitly
    with caplog.at_level(logging.INFO):
        final = trainer.train_and_evaluate(tiny_config, workdir, allow_config_change=True)
    assert final["step"] == 12
    assert "checkpoint step 6" in caplog.text and "resumed from step 3 " in caplog.text
    # Rows after step 3 (4, 6, 8, 9 of the first run) were superseded, not duplicated.
    assert _train_steps(workdir) == [2, 4, 6, 8, 10, 12]
    # Step numbers 6 and 9 were free again for the new run's saves.
    assert _step_dirs(workdir) == [6, 9, 12]
    assert sorted(os.listdir(os.path.join(workdir, "corrupt_checkpoints"))) == ["6", "9"]


@pytest.mark.slow
def test_sigkill_mid_training_then_restart_matches_uninterrupted(
        built, reference, env, tmp_path):
    want = reference.result()  # first: its compiled programs are then in the cache
    workdir = str(tmp_path / "run")
    proc = _launch(workdir, env, "killed.log")
    try:
        _wait_for_first_checkpoint(proc, workdir)
        proc.send_signal(signal.SIGKILL)
        rc, out = _finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == -signal.SIGKILL, out[-4000:]
    # Killed mid-training: no final metrics, and it had not reached the last step.
    assert not os.path.exists(os.path.join(workdir, "final_metrics.json"))
    saved = _step_dirs(workdir)
    assert saved and saved[-1] < STEPS, saved
    logged = _train_steps(workdir)
    assert not logged or logged[-1] < STEPS, logged
    _resume_and_check(workdir, env, want, built, saved[-1], len(logged))


@pytest.mark.slow
def test_sigterm_saves_exits_cleanly_and_resumes_to_the_same_state(
        built, reference, env, tmp_path):
    want = reference.result()  # first: its compiled programs are then in the cache
    workdir = str(tmp_path / "run")
    proc = _launch(workdir, env, "terminated.log")
    try:
        _wait_for_first_checkpoint(proc, workdir)
        proc.send_signal(signal.SIGTERM)
        rc, out = _finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 128 + signal.SIGTERM, out[-4000:]  # 143: every CLI's preemption status
    assert "Traceback" not in out, out[-4000:]
    match = re.search(r"preempted \(SIGTERM\): checkpoint saved at step (\d+)", out)
    assert match, out[-4000:]
    stopped = int(match.group(1))
    assert EVERY <= stopped < STEPS, stopped  # it stopped mid-training
    assert not os.path.exists(os.path.join(workdir, "final_metrics.json"))
    saved = _step_dirs(workdir)
    # The preemption checkpoint is the newest, at the step where it stopped: after the last
    # periodic one, or that one itself when the signal came right at a multiple of EVERY.
    assert saved[-1] == stopped, (saved, stopped)
    assert stopped % EVERY == 0 or saved[-2:] == [stopped // EVERY * EVERY, stopped], saved
    logged = _train_steps(workdir)
    assert not logged or logged[-1] <= stopped, logged
    _resume_and_check(workdir, env, want, built, stopped, len(logged))
