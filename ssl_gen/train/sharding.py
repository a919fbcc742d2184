"""The device mesh and the shardings of the data-parallel train step.

One mesh axis, "data", over every device of every process; batches are split along their
leading axis. The train state is either replicated (`config.sharding = "replicated"`, the
default) or sharded by rule (`"fsdp"`: fully sharded data parallel, ZeRO stage 3): every
state leaf of at least `config.fsdp_min_size` elements is split along its largest axis
that the device count divides, so parameters, optimizer moments and EMA copies each take
1/n of the memory per device, and small leaves (biases, norms, scalars) stay replicated.
jit + NamedSharding inserts the collectives itself (all-gathers of the sharded weights in
the forward and backward passes, a reduce-scatter of their gradients); no pmap, no
shard_map. Either way the loss is the same function of the same global batch: a test
checks FSDP on 8 devices against replication.
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


SHARDINGS = ("replicated", "fsdp")
FSDP_MIN_SIZE = 2**14  # elements: a 128x128 kernel is sharded, a 1024-vector is not


def fsdp_spec(shape: tuple[int, ...], n: int, min_size: int = FSDP_MIN_SIZE) -> PartitionSpec:
    """The FSDP rule for one array: its largest axis divisible by n on the data axis (ties:
    the last such axis), or replicated when it is smaller than `min_size` or no axis fits."""
    if n <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    fits = [i for i, d in enumerate(shape) if d % n == 0]
    if not fits:
        return PartitionSpec()
    axis = max(fits, key=lambda i: (shape[i], i))
    return PartitionSpec(*([None] * axis + [DATA_AXIS]))


def state_shardings(abstract_state, mesh: Mesh, mode: str = "replicated",
                    min_size: int = FSDP_MIN_SIZE):
    """A NamedSharding per leaf of `abstract_state` (ShapeDtypeStructs) under `mode`."""
    if mode not in SHARDINGS:
        raise ValueError(f"config.sharding={mode!r} must be one of {', '.join(SHARDINGS)}")
    n = mesh.devices.size
    if mode == "replicated":
        return jax.tree.map(lambda _: replicated(mesh), abstract_state)
    return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(tuple(a.shape), n, min_size)),
                        abstract_state)


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    """A one-line error when the global batch can't be split evenly over devices and hosts."""
    n, p = mesh.devices.size, jax.process_count()
    if global_batch_size < 1 or global_batch_size % n or global_batch_size % p:
        raise ValueError(
            f"config.{what}={global_batch_size} must be a positive multiple of the "
            f"{n} devices ({p} processes); e.g. {max(n, p) * max(1, global_batch_size // n)}"
        )
