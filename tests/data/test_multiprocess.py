"""Two real JAX processes on localhost: their pipelines and global batches equal one process's.

Each process (2 CPU devices each, gloo collectives) builds an `InputPipeline` (dynamic
binarization and a random flip, resumed at batch 2) with the default process index/count,
turns its local batches into global arrays with `make_global_batch`,
and gathers them back; the result must equal the single-process pipeline's global batches.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from ssl_gen import data

_WORKER = r"""
import json, os, sys
import jax
import numpy as np
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                           process_id=int(sys.argv[2]))
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ssl_gen import data

OPS = [{"name": "binarize", "mode": "dynamic"}, "flip"]
rng = np.random.default_rng(0)  # the same source as make_source()
grey = rng.integers(0, 17, size=(50, 8, 8, 1)).astype(np.uint8)
source = data.InMemorySource({"image": grey, "grey": grey, "id": np.arange(50) * 3})
mesh = Mesh(np.array(jax.devices()), ("data",))
sharding = NamedSharding(mesh, PartitionSpec("data"))
pipeline = data.InputPipeline(source, global_batch_size=16, seed=5, preprocess=OPS)
pipeline.set_state({"next_batch": 2})  # resumed: batches 2.. of the stream
out = []
for _ in range(8):
    batch = data.make_global_batch(next(pipeline), sharding)
    assert batch["id"].shape == (16,) and len(jax.devices()) == 4
    out.append({k: multihost_utils.process_allgather(v, tiled=True).tolist()
                for k, v in batch.items()})
with open(sys.argv[3], "w") as f:
    json.dump(out, f)
"""


OPS = [{"name": "binarize", "mode": "dynamic"}, "flip"]  # as in the worker script


def make_source():
    """The source both workers build too (the worker script repeats these lines)."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 17, size=(50, 8, 8, 1)).astype(np.uint8)
    return data.InMemorySource({"image": grey, "grey": grey, "id": np.arange(50) * 3})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_make_the_single_process_global_batches(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    # Output goes to files: a full pipe would block a worker, and with it the other one's
    # distributed shutdown.
    procs = []
    for i in range(2):
        with open(tmp_path / f"log{i}", "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _WORKER, address, str(i), str(tmp_path / f"out{i}")],
                env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for i, proc in enumerate(procs):
            assert proc.wait(timeout=120) == 0, (tmp_path / f"log{i}").read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    outputs = [json.loads((tmp_path / f"out{i}").read_text()) for i in range(2)]
    assert outputs[0] == outputs[1]
    single = data.InputPipeline(make_source(), global_batch_size=16, seed=5, process_index=0,
                                process_count=1, preprocess=OPS)
    single.set_state({"next_batch": 2})
    for got in outputs[0]:
        expected = next(single)
        for k, v in expected.items():
            np.testing.assert_array_equal(np.asarray(got[k]), v, err_msg=k)
