"""DevicePrefetcher: same batches and exact pipeline states, threaded or not."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssl_gen import data


def _source(n=40):
    return data.InMemorySource({"image": np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2, 1),
                                "id": np.arange(n)})


@pytest.mark.parametrize("size", [0, 1, 3])
def test_prefetch_matches_pipeline_and_states(size):
    sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("data",)), PartitionSpec("data"))
    ref = data.InputPipeline(_source(), global_batch_size=16, seed=3)
    want = []
    for _ in range(7):  # 7 batches cross two epoch boundaries (2 batches per epoch)
        batch = next(ref)
        want.append((batch, ref.get_state()))
    pf = data.DevicePrefetcher(data.InputPipeline(_source(), global_batch_size=16, seed=3),
                               sharding, size)
    try:
        for batch, state in want:
            got, got_state = next(pf)
            assert got_state == state
            np.testing.assert_array_equal(np.asarray(got["image"]), batch["image"])
            assert got["image"].sharding == sharding
    finally:
        pf.close()


def test_prefetch_reraises_pipeline_errors():
    class Broken:
        def __next__(self):
            raise RuntimeError("disk on fire")

        def get_state(self):
            return {}

    pf = data.DevicePrefetcher(Broken(), None, 2)
    with pytest.raises(RuntimeError, match="disk on fire"):
        next(pf)
    pf.close()
