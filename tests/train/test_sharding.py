"""FSDP (ssl_gen.train.sharding): the rule, and a run on 8 devices equal to replication."""

import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ssl_gen.train import sharding, trainer
from tests.train.conftest import restore_newest


@pytest.mark.parametrize("shape, n, want", [
    ((64, 32), 8, P("data")),            # both fit: the larger axis
    ((32, 64), 8, P(None, "data")),
    ((30, 64), 8, P(None, "data")),      # only the axis the device count divides
    ((3, 3, 16, 24), 8, P(None, None, None, "data")),
    ((30, 30), 8, P()),                  # nothing divides: replicated
    ((100,), 8, P()),                    # below min_size: replicated
    ((64, 32), 1, P()),                  # one device: nothing to shard
])
def test_the_fsdp_rule(shape, n, want):
    assert sharding.fsdp_spec(shape, n, min_size=256) == want


def test_unknown_mode_is_one_line():
    mesh = sharding.make_mesh(1)
    with pytest.raises(ValueError, match="config.sharding='zero3' must be one of"):
        sharding.state_shardings({}, mesh, "zero3")


def _final_state(config, workdir):
    b = trainer.build(config, workdir)
    return b, restore_newest(b.abstract_state, workdir)[1]


@pytest.mark.slow
def test_fsdp_on_8_devices_trains_like_replication(tiny_config, tmp_path):
    """The same 6 steps with the state sharded by rule and replicated: the same losses and
    parameters to float32 round-off; the large leaves (parameters and both Adam moments)
    really are split 8 ways, the small ones replicated."""
    losses = {}
    for mode in ("replicated", "fsdp"):
        c = tiny_config
        c.sharding, c.fsdp_min_size, c.num_devices = mode, 256, 8
        workdir = str(tmp_path / mode)
        trainer.train_and_evaluate(c, workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            losses[mode] = [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]
        losses[mode + "_state"] = _final_state(c, workdir)
    np.testing.assert_allclose(losses["fsdp"], losses["replicated"], rtol=1e-5)
    (_, rep), (b, fsdp) = losses["replicated_state"], losses["fsdp_state"]
    for a, r in zip(jax.tree.leaves(fsdp), jax.tree.leaves(rep), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-5, atol=1e-6)
    specs = {jax.tree_util.keystr(p): (x.shape, s.spec) for (p, x), s in zip(
        jax.tree.flatten_with_path(b.abstract_state)[0], jax.tree.leaves(b.state_sharding),
        strict=True)}
    big = {k: v for k, v in specs.items() if np.prod(v[0]) >= 256}
    assert big and all("data" in tuple(spec) for _, spec in big.values()), big
    assert any("opt_state" in k for k in big)  # the moments are sharded like the weights
    assert all(spec == P() for shape, spec in specs.values() if np.prod(shape) < 256)
    for leaf in jax.tree.leaves(fsdp["params"]):
        if leaf.size >= 256:
            assert leaf.addressable_shards[0].data.size == leaf.size // 8
