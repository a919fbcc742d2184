"""SIGTERM and Ctrl-C at any point: during training, a periodic or the final evaluation,
between two runs of the comparison; a second Ctrl-C exits at once (ssl_gen.preemption)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ssl_gen import preemption
from ssl_gen.evals import iwae
from ssl_gen.runners import dvae_comparison as compare
from ssl_gen.train import trainer
from tests.train.conftest import ROOT, load_config


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_sigterm_during_a_periodic_evaluation_saves_and_the_resumed_run_evaluates_it(
        tiny_config, tmp_path, monkeypatch):
    tiny_config.evals = {"iwae": dict(every_steps=3, kwargs=dict(num_samples=2, chunk_size=2))}
    workdir = str(tmp_path)
    real, calls = iwae.iwae_bound, []

    def bound_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # in the middle of step 3's evaluation
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(iwae, "iwae_bound", bound_then_sigterm)
    out = trainer.train_and_evaluate(tiny_config, workdir)
    assert out == {"preempted": 1.0, "step": 3.0, "signal": float(signal.SIGTERM)}
    assert len(calls) == 2  # it stopped at the next batch: the eval split has 3
    assert not [r for r in _rows(workdir) if r["split"] == "eval"]  # nothing half-written
    final = trainer.train_and_evaluate(tiny_config, workdir)
    assert final["step"] == 6
    # Step 3 evaluated once, by the resumed run; step 6 by the final evaluation.
    assert [r["step"] for r in _rows(workdir) if r["split"] == "eval"] == [3, 6]


def test_a_signal_between_two_runs_stops_the_comparison(tmp_path, monkeypatch, data_dir):
    c = load_config("experiments/dvae_estimators.py", "categorical,runlocal,sweep")
    c.dataset.data_dir = data_dir
    c.estimators, c.seeds = "rloo,gumbel_softmax", "0"
    calls = []

    def finished_then_sigterm(config, workdir, **kwargs):
        calls.append(workdir)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives as the first run ends
        return {"step": 20.0}

    monkeypatch.setattr(compare.trainer, "train_and_evaluate", finished_then_sigterm)
    assert compare.run(c, str(tmp_path)) is None
    assert len(calls) == 1 and not (tmp_path / "report.md").exists()


def _env(data_dir, cache):
    return {**os.environ, "TFDS_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _launch(workdir, env, overrides, *flags):
    cmd = [sys.executable, "-m", "ssl_gen.train.main",
           "--config=experiments/vae.py:digits,runlocal", f"--workdir={workdir}",
           "--config.progress_bar=False", *[f"--config.{k}={v}" for k, v in overrides.items()],
           *flags]
    log = open(f"{workdir}.log", "w")  # noqa: SIM115 - a file, not a pipe: never blocks
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = f"{workdir}.log"
    return proc


def _wait_for(path, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} never appeared:\n" + open(proc.log).read()[-3000:])
        time.sleep(0.02)


def _finish(proc, timeout):
    try:
        return proc.wait(timeout=timeout), open(proc.log).read()
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("did not stop in time:\n" + open(proc.log).read()[-3000:])


# A long final evaluation in many short batches: k = 20,000 importance samples on batches of
# 8 of the 360 test digits (45 batches of a fraction of a second each).
LONG_FINAL = {"num_train_steps": 20, "eval_batch_size": 8, "evals.images.every_steps": 0,
              "evals.iwae.every_steps": 0, "evals.iwae.final_kwargs.num_samples": 20000,
              "evals.iwae.final_kwargs.chunk_size": 1000}


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_stops_within_seconds(data_dir, tmp_path):
    env = _env(data_dir, str(tmp_path / "cache"))
    workdir = str(tmp_path / "run")
    proc = _launch(workdir, env, LONG_FINAL)
    # The final checkpoint (step 20) is saved as the final evaluation starts.
    _wait_for(os.path.join(workdir, "checkpoints", "20"), proc)
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc, out = _finish(proc, timeout=120)
    assert rc == 143, out[-3000:]
    assert time.monotonic() - t0 < 30, "waited for the whole evaluation"
    assert out.count("preempted (SIGTERM)") == 1 and "Traceback" not in out, out[-3000:]
    assert not os.path.exists(os.path.join(workdir, "final_metrics.json"))
    # Rerun (with a cheaper final bound, so an explicit config change): it restores step 20
    # and runs the final evaluation once.
    cheaper = {**LONG_FINAL, "evals.iwae.final_kwargs.num_samples": 100,
               "evals.iwae.final_kwargs.chunk_size": 100}
    rc, out = _finish(_launch(workdir, env, cheaper, "--allow_config_change"), timeout=600)
    assert rc == 0, out[-3000:]
    assert [r["step"] for r in _rows(workdir) if r["split"] == "final"] == [20]
    with open(os.path.join(workdir, "config_history.jsonl")) as f:
        (change,) = [json.loads(line) for line in f]
    assert change["resumed_at_step"] == 20
    assert set(change["changes"]) == {"evals.iwae.final_kwargs.num_samples",
                                      "evals.iwae.final_kwargs.chunk_size"}


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_130_without_a_traceback(data_dir, tmp_path):
    env = _env(data_dir, str(tmp_path / "cache"))
    workdir = str(tmp_path / "run")
    steps = {"num_train_steps": 2000, "checkpoint_every_steps": 100, "log_every_steps": 50,
             "evals.iwae.every_steps": 0, "evals.images.every_steps": 0}
    proc = _launch(workdir, env, steps)
    _wait_for(os.path.join(workdir, "checkpoints", "100"), proc)
    proc.send_signal(signal.SIGINT)
    rc, out = _finish(proc, timeout=120)
    assert rc == 130, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    assert out.count("preempted (Ctrl-C): checkpoint saved at step ") == 1, out[-3000:]
    stopped = int(out.split("checkpoint saved at step ")[1].split()[0])
    assert 100 <= stopped < 2000
    ckpts = sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints"))
                   if n.isdigit())
    assert ckpts[-1] == stopped


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once():
    code = ("import os, signal, time\n"
            "from ssl_gen import preemption\n"
            "with preemption.guard():\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    assert preemption.requested() == signal.SIGINT\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(30)\n")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 130, p.stderr
    assert time.monotonic() - t0 < 20
    assert p.stderr.strip().startswith("second interrupt: exiting now"), p.stderr


def test_exit_status_is_the_shells_convention():
    assert preemption.exit_status(signal.SIGTERM) == 143
    assert preemption.exit_status(signal.SIGINT) == 130
