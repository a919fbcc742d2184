"""The command lines, driven as a user does: every mistake is one line on stderr, a non-zero
exit and no checkpoint; None-valued fields are overridable; --print_config, --list_variants.

All launches start at once (each is mostly Python start-up and imports; the mistakes are
found before anything compiles), so the file costs about one launch per core.
"""

import os
import subprocess
import sys

import pytest

from tests.train.conftest import ROOT

TRAIN = [sys.executable, "-m", "ssl_gen.train.main"]
VAE = "--config=experiments/vae.py:digits,runlocal"
DVAE = "--config=experiments/dvae_estimators.py:categorical,runlocal"

# name -> (command after the interpreter, a piece of the one line it must print)
MISTAKES = {
    "top-level typo": (TRAIN + [VAE, "--config.num_train_step=5"],
                       "config: unknown key 'num_train_step'; did you mean 'num_train_steps'?"),
    "nested typo": (TRAIN + [VAE, "--config.optimizer.learnin_rate=0.1"],
                    "config.optimizer: unknown key 'learnin_rate'; did you mean "
                    "'learning_rate'?"),
    "negative learning rate": (TRAIN + [VAE, "--config.optimizer.learning_rate=-1"],
                               "config.optimizer.learning_rate=-1.0 must be a number > 0"),
    "optimizer typo": (TRAIN + [VAE, "--config.optimizer.name=adamm"],
                       "did you mean 'adam'?"),
    "value that does not parse": (TRAIN + [VAE, "--config.batch_size=abc"],
                                  "--config.batch_size=abc"),
    "bad device count": (TRAIN + [VAE, "--config.num_devices=0"],
                         "config.num_devices=0 must be None (all) or an int >= 1"),
    "dataset typo": (TRAIN + [VAE, "--config.dataset.name=digit"],
                     "did you mean the embedded 'digits'?"),
    "variant typo": (TRAIN + ["--config=experiments/vae.py:digit"],
                     "config arg 'digit' is not one of"),
    "missing config file": (TRAIN + ["--config=experiments/nope.py:x"], "no such file"),
    "workdir is a file": (TRAIN + [VAE, "--workdir=<FILE>"], "is a file, not a directory"),
    "workdir not writable": (TRAIN + [VAE, "--workdir=/proc/ssl_gen_test/run"],
                             "is not writable"),
    "estimator typo": (TRAIN + [DVAE, "--config.objective.kwargs.estimator.name=gumbel_softmx"],
                       "gumbel_softmx"),
    "float sample count": (TRAIN + [DVAE, "--config.objective.kwargs.num_samples=2.5"],
                           "num_samples"),
    "runner setting": ([sys.executable, "-m", "ssl_gen.main",
                        "--config=experiments/estimator_toys.py:gaussian,runlocal",
                        "--config.num_replicas=-5"],
                       "config.num_replicas=-5 must be an int >= 2"),
    "sweep estimator typo": ([sys.executable, "-m", "ssl_gen.main",
                              "--config=experiments/dvae_estimators.py:categorical,runlocal,"
                              "sweep", "--config.estimators=rloo,gumbel"],
                             "'gumbel' is not one of"),
}


def _env(data_dir):
    return {**os.environ, "TFDS_DATA_DIR": data_dir, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


@pytest.fixture(scope="module")
def launched(data_dir, tmp_path_factory):
    """Every mistake's process, started together: name -> (returncode, stdout, stderr, dir)."""
    root = tmp_path_factory.mktemp("cli")
    a_file = root / "a_file"
    a_file.write_text("not a directory")
    procs = {}
    for i, (name, (cmd, _)) in enumerate(MISTAKES.items()):
        workdir = root / f"run{i}"
        cmd = [a.replace("<FILE>", str(a_file)) for a in cmd]
        if not any(a.startswith("--workdir") for a in cmd):
            cmd.append(f"--workdir={workdir}")
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=_env(data_dir), text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE),
                       workdir)
    out = {}
    for name, (p, workdir) in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        out[name] = (p.returncode, stdout, stderr, workdir)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_mistake_is_one_line_a_nonzero_exit_and_no_checkpoint(launched, name):
    rc, stdout, stderr, workdir = launched[name]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert rc != 0, (stdout, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert MISTAKES[name][1] in lines[0], lines[0]
    assert "Traceback" not in stdout + stderr
    ckpt = workdir / "checkpoints"
    assert not ckpt.exists() or not any(n.isdigit() for n in os.listdir(ckpt))


@pytest.mark.slow
def test_none_valued_fields_are_overridable_and_print_config_exits(data_dir):
    cmd = TRAIN + [VAE, "--config.num_devices=1", "--config.dataset.data_dir=/some/path",
                   "--print_config"]
    p = subprocess.run(cmd, cwd=ROOT, env=_env(data_dir), text=True, capture_output=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert '"num_devices": 1' in p.stdout and '"data_dir": "/some/path"' in p.stdout


@pytest.mark.slow
def test_list_variants_prints_the_docstring_table(data_dir):
    p = subprocess.run(TRAIN + ["--config=experiments/vae.py", "--list_variants"], cwd=ROOT,
                       env=_env(data_dir), text=True, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "digits_binarized" in p.stdout and "runlocal" in p.stdout
