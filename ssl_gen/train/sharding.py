"""The device mesh and the shardings of the data-parallel train step.

One mesh axis, "data", over every device of every process. Parameters and optimizer state
are replicated; batches are split along their leading axis. jit + NamedSharding does the
gradient all-reduce itself (no pmap, and no shard_map n_devices-times-too-large gradients).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D data-parallel mesh over the first `num_devices` devices (default: all)."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"num_devices={num_devices} but {len(devices)} devices are visible")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    """A one-line error when the global batch can't be split evenly over devices and hosts."""
    n, p = mesh.devices.size, jax.process_count()
    if global_batch_size < 1 or global_batch_size % n or global_batch_size % p:
        raise ValueError(
            f"config.{what}={global_batch_size} must be a positive multiple of the "
            f"{n} devices ({p} processes); e.g. {max(n, p) * max(1, global_batch_size // n)}"
        )
