"""Shared fixtures for trainer tests: a session-wide tfds data dir and small configs."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(path: str, arg: str | None = None):
    """get_config(arg) of an experiment file, the way config_flags loads it."""
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


def runlocal_config(data_dir: str, overrides: dict):
    """experiments/vae.py:digits,runlocal with dotted `--config.x.y=v`-style overrides: the
    in-process twin of a launched subprocess's config (for its abstract state)."""
    c = load_config("experiments/vae.py", "digits,runlocal")
    c.dataset.data_dir = data_dir
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = c
        for p in path:
            node = node[p]
        node[last] = value
    return c


def restore_newest(abstract_state, workdir: str):
    """(step, state, data_state) of a run's newest checkpoint, restored in this process onto
    `abstract_state` (a `trainer.build(...).abstract_state`); fails if nothing restores."""
    from ssl_gen.train.checkpoint import Checkpointer

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every_steps=1)
    try:
        restored = ckpt.restore_latest(abstract_state)
    finally:
        ckpt.close()
    assert restored is not None, f"nothing restores in {workdir}"
    return restored


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One tfds data dir for the session: the embedded datasets are built into it once."""
    d = str(tmp_path_factory.mktemp("tfds"))
    os.environ["TFDS_DATA_DIR"] = d  # subprocesses (multi-process / kill tests) inherit it
    return d


@pytest.fixture
def tiny_config(data_dir):
    """The VAE's runlocal config on digits: a few steps of a tiny model, no slow evals."""
    c = load_config("experiments/vae.py", "digits,runlocal")
    c.dataset.data_dir = data_dir
    c.progress_bar = False
    c.num_train_steps = 6
    c.log_every_steps = 2
    c.checkpoint_every_steps = 3
    c.evals = {"iwae": dict(every_steps=0, kwargs=dict(num_samples=2, chunk_size=2))}
    return c
