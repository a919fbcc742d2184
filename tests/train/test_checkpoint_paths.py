"""`checkpoint.read_state` / `saved_shapes` on a relative step directory (orbax needs
absolute paths; a relative one was an opaque TypeError)."""

import jax.numpy as jnp
import numpy as np

from ssl_gen.train import checkpoint
from tests.train.test_init import _state, _write


def test_a_relative_step_directory_reads(tmp_path, monkeypatch):
    _write(tmp_path / "ckpt", 3, _state({"w": jnp.full((2,), 5.0)}))
    monkeypatch.chdir(tmp_path)
    state = checkpoint.read_state("ckpt/3", ("params",))
    np.testing.assert_array_equal(state["params"]["params"]["w"], [5.0, 5.0])
    assert checkpoint.saved_shapes("ckpt/3")["params"]["params"]["w"].shape == (2,)
