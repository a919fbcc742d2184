"""The input pipeline: deterministic, resumable, multi-host batches from a random-access source.

Why this shape: the trainer needs (1) the same batches on a resumed run as on an uninterrupted
one, (2) each host to read only its own part of every global batch, with the parts of all
hosts together forming the same global batch whatever the number of hosts, and (3) a per-batch
cost far below a ~1 ms train step. All of it follows from one explicit derivation:

- epoch `e` visits the examples in the order `np.random.default_rng([seed, e]).permutation(n)`
  (`arange(n)` without shuffling);
- global batch `b` of the epoch is `perm[b * G:(b + 1) * G]`;
- host `p` of `P` takes the contiguous slice `[p * G/P, (p + 1) * G/P)` of it.

The position is two ints (`get_state()`), so a checkpoint stores it as JSON. Dynamic
binarization draws bit `j` of example `id` from a counter-based hash (SplitMix64, lowbias32)
of `(seed, epoch, id, j)`: no generator state to save, the same bits on resume, on any host,
whatever batch the example lands in. The id is the example's `id` field, or its index in the
source when it has none (tfds `mnist`): then the bits follow the source's (stable) order.

`BinarizedSource` wraps a source with a fixed binarization of its `image` (one Bernoulli
sample at a reserved epoch, or a threshold): what evaluations read when training uses
dynamic binarization of grey-level data such as tfds `mnist`.

Sources with a `get_batch(indices)` method (`InMemorySource`) are gathered by fancy indexing;
others through `__getitems__` (tfds data sources) or `source[i]`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN_INT = 0x9E3779B97F4A7C15
_GOLDEN = np.uint64(_GOLDEN_INT)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_KEY_TAG = 0x62696E6172697A65  # separates binarization keys from other streams
_GOLDEN32 = np.uint32(0x9E3779B9)
_MIX32_1 = np.uint32(0x7FEB352D)
_MIX32_2 = np.uint32(0x846CA68B)


def _mix64_int(x: int) -> int:
    """SplitMix64's finalizer on a Python int (mod 2**64): cheap for scalar keys."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on a uint64 array (wrapping arithmetic; returns a new array)."""
    x = x ^ (x >> np.uint64(30))
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def _mix32_(x: np.ndarray) -> None:
    """The `lowbias32` integer hash (a bijection of uint32), in place."""
    x ^= x >> np.uint32(16)
    x *= _MIX32_1
    x ^= x >> np.uint32(15)
    x *= _MIX32_2
    x ^= x >> np.uint32(16)


def bernoulli_bits(grey: np.ndarray, ids: np.ndarray, *, seed: int, epoch: int,
                   grey_max: int = 16) -> np.ndarray:
    """Bits ~ Bernoulli(grey / grey_max), a pure function of (seed, epoch, id, element).

    A per-example key is hashed (SplitMix64) from (seed, epoch, id); element `j` (flattened)
    gets the 24-bit uniform `lowbias32(key + (j + 1) * golden) >> 8` and is 1 when that is
    below `grey * 2**24 / grey_max`: the probability is exactly grey / grey_max when
    grey_max divides 2**24 (16 does); otherwise (255 for uint8 images) it is
    floor(grey * 2**24 / grey_max) / 2**24, within 2**-24 of it, and still exactly 0 at grey 0
    and 1 at grey_max. Vectorized: ~10 integer ops per element.

    Args:
      grey: integer array (batch, ...) with values in 0..grey_max.
      ids: int array (batch,): the examples' ids.
      seed: the pipeline seed (>= 0).
      epoch: the epoch (>= 0).
      grey_max: the grey level meaning probability 1.

    Returns:
      uint8 array shaped like `grey`, values in {0, 1}.
    """
    batch = grey.shape[0]
    key = _mix64_int(_mix64_int(int(seed) ^ _KEY_TAG) + int(epoch) * _GOLDEN_INT)
    keys = np.asarray(ids).astype(np.uint64).reshape(batch)
    keys *= _GOLDEN
    keys ^= np.uint64(key)
    keys = _mix64(keys)
    counters = np.arange(1, grey[0].size + 1, dtype=np.uint32) * _GOLDEN32
    h = keys.astype(np.uint32)[:, None] + counters[None, :]
    _mix32_(h)
    h >>= np.uint32(8)
    levels = grey.reshape(batch, -1)
    if (1 << 24) % grey_max == 0:
        thresholds = levels.astype(np.uint32)
        thresholds *= np.uint32((1 << 24) // grey_max)
    else:
        lut = (np.arange(grey_max + 1, dtype=np.uint64) << np.uint64(24)) // np.uint64(grey_max)
        if np.iinfo(levels.dtype).max > grey_max:  # else no level can exceed grey_max
            levels = np.minimum(levels, grey_max)
        thresholds = lut.astype(np.uint32)[levels]
    return (h < thresholds).view(np.uint8).reshape(grey.shape)


def gather(source: Sequence[Mapping[str, Any]], indices: np.ndarray) -> dict[str, np.ndarray]:
    """Examples `indices` of `source` as a dict of arrays with a leading batch axis.

    Args:
      source: a random-access source; `get_batch` and `__getitems__` are used if present.
      indices: int array of example indices.

    Returns:
      field -> array (len(indices), ...).
    """
    if hasattr(source, "get_batch"):
        return source.get_batch(indices)
    index_list = [int(i) for i in indices]
    if hasattr(source, "__getitems__"):
        records = source.__getitems__(index_list)
    else:
        records = [source[i] for i in index_list]
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process_index {index} is not in [0, process_count={count})")
    return index, count


def _check_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(f"global batch size {global_batch_size} must be a positive multiple "
                         f"of the process count {process_count}")
    return global_batch_size // process_count


def _check_grey_max(grey_max: int) -> int:
    if isinstance(grey_max, bool) or not isinstance(grey_max, (int, np.integer)) or grey_max < 1:
        raise ValueError(f"grey_max must be an int >= 1, got {grey_max!r}")
    return int(grey_max)


def _grey_field(source: Sequence[Mapping[str, Any]], what: str) -> str:
    """The field holding a source's grey levels: `grey` (digits_binarized), else `image`."""
    fields = source[0].keys()
    field = "grey" if "grey" in fields else "image"
    if field not in fields:
        raise ValueError(f"{what} needs a 'grey' or 'image' field; the source has "
                         f"{sorted(fields)}")
    return field


class InputPipeline:
    """An infinite iterator over this host's part of each global training batch.

    Yields dicts of numpy arrays with a leading axis of `global_batch_size // process_count`.
    With `drop_remainder=False` every batch also has a float32 `mask` (1 real, 0 padding)
    and the last batch of each epoch is padded with copies of other examples of the epoch.
    """

    def __init__(self, source: Sequence[Mapping[str, Any]], *, global_batch_size: int,
                 seed: int, shuffle: bool = True, process_index: int | None = None,
                 process_count: int | None = None, dynamic_binarization: bool = False,
                 drop_remainder: bool = True, grey_max: int = 16):
        """Creates the pipeline at epoch 0, batch 0.

        Args:
          source: random-access source (`len`, `source[i] -> dict`), e.g. from `get_source`.
          global_batch_size: examples per global batch, over all processes.
          seed: non-negative int; the epoch permutations and binarization bits derive from it.
          shuffle: permute the examples every epoch (else source order every epoch).
          process_index: this host's index (default `jax.process_index()`).
          process_count: number of hosts (default `jax.process_count()`).
          dynamic_binarization: replace `image` with Bernoulli(grey / grey_max) bits drawn
            from (seed, epoch, example id); the grey levels are read from the `grey` field
            (digits_binarized) or, if there is none, from `image`. The id is the `id` field,
            or the example's index in the source if there is none (tfds `mnist`).
          drop_remainder: drop each epoch's last incomplete batch (else pad it, see above).
          grey_max: the grey level meaning probability 1 (16 for digits, 255 for uint8 images).
        """
        self._source = source
        self._n = len(source)
        self._process_index, self._process_count = _processes(process_index, process_count)
        self._local = _check_batch_size(global_batch_size, self._process_count)
        self._global = global_batch_size
        if self._n == 0:
            raise ValueError("InputPipeline: the source is empty")
        if drop_remainder and global_batch_size > self._n:
            raise ValueError(f"global batch size {global_batch_size} exceeds the {self._n} "
                             "examples of the source (with drop_remainder=True)")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self._seed = int(seed)
        self._shuffle = shuffle
        self._drop_remainder = drop_remainder
        self._grey_max = _check_grey_max(grey_max)
        self._grey_field = (_grey_field(source, "dynamic_binarization")
                            if dynamic_binarization else None)
        if drop_remainder:
            self._batches_per_epoch = self._n // global_batch_size
        else:
            self._batches_per_epoch = -(-self._n // global_batch_size)
        self._epoch = 0
        self._batch = 0
        self._perm_epoch, self._perm = -1, np.arange(0)

    @property
    def batches_per_epoch(self) -> int:
        """Global batches in one epoch."""
        return self._batches_per_epoch

    @property
    def local_batch_size(self) -> int:
        """Examples per yielded (host-local) batch."""
        return self._local

    def permutation(self, epoch: int) -> np.ndarray:
        """The order in which epoch `epoch` visits the source's examples."""
        if epoch != self._perm_epoch:
            if self._shuffle:
                self._perm = np.random.default_rng([self._seed, epoch]).permutation(self._n)
            else:
                self._perm = np.arange(self._n)
            self._perm_epoch = epoch
        return self._perm

    def get_state(self) -> dict[str, int]:
        """The position (next batch to yield) as plain ints, for checkpoints."""
        return {"epoch": self._epoch, "batch_in_epoch": self._batch}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Moves to a position returned by `get_state` (possibly of another process)."""
        epoch, batch = int(state["epoch"]), int(state["batch_in_epoch"])
        if epoch < 0 or not 0 <= batch < self._batches_per_epoch:
            raise ValueError(f"invalid pipeline state {dict(state)}: epochs >= 0 and "
                             f"batch_in_epoch in [0, {self._batches_per_epoch})")
        self._epoch, self._batch = epoch, batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        epoch, b = self._epoch, self._batch
        perm = self.permutation(epoch)
        start = b * self._global + self._process_index * self._local
        if self._drop_remainder:
            indices, mask = perm[start:start + self._local], None
        else:
            positions = np.arange(start, start + self._local)
            valid = positions < self._n
            indices = perm[np.where(valid, positions, positions % self._n)]
            mask = valid.astype(np.float32)
        batch = gather(self._source, indices)
        if mask is not None:
            batch["mask"] = mask
        if self._grey_field is not None:
            ids = batch["id"] if "id" in batch else indices
            batch["image"] = bernoulli_bits(batch[self._grey_field], ids, seed=self._seed,
                                            epoch=epoch, grey_max=self._grey_max)
        self._batch += 1
        if self._batch == self._batches_per_epoch:
            self._epoch, self._batch = epoch + 1, 0
        return batch


def eval_batches(source: Sequence[Mapping[str, Any]], global_batch_size: int, *,
                 process_index: int | None = None, process_count: int | None = None
                 ) -> Iterator[dict[str, np.ndarray]]:
    """One in-order pass over the whole source, this host's part of each global batch.

    Global batch `b` holds examples `b * G .. (b + 1) * G - 1` of the source; the last one is
    padded (with copies of example 0) to the full size. Every batch has a float32 `mask`:
    1 for real examples, 0 for padding, so each example counts exactly once over all hosts.

    Args:
      source: random-access source.
      global_batch_size: examples per global batch, over all processes.
      process_index: this host's index (default `jax.process_index()`).
      process_count: number of hosts (default `jax.process_count()`).

    Yields:
      dicts of numpy arrays with a leading axis of `global_batch_size // process_count`.
    """
    n = len(source)
    index, count = _processes(process_index, process_count)
    local = _check_batch_size(global_batch_size, count)
    for b in range(-(-n // global_batch_size)):
        positions = np.arange(local) + (b * global_batch_size + index * local)
        valid = positions < n
        batch = gather(source, np.where(valid, positions, 0))
        batch["mask"] = valid.astype(np.float32)
        yield batch


BINARIZE_MODES = ("bernoulli", "threshold")
# The epoch `BinarizedSource` draws its fixed sample at: training (epochs 0, 1, ...) never
# reaches it, so the fixed bits differ from every epoch's dynamic bits even at the same seed.
FIXED_BINARIZATION_EPOCH = (1 << 32) - 1


class BinarizedSource:
    """A read-only view of a random-access source whose `image` is a fixed binarization.

    The grey levels are read from the `grey` field if there is one (digits_binarized), else
    from `image`, and `image` becomes uint8 bits in {0, 1}, shaped like the levels:

    - "bernoulli": one sample of Bernoulli(grey / grey_max), `bernoulli_bits` at
      (`seed`, `FIXED_BINARIZATION_EPOCH`, example id): the same bits on every host, run and
      access path. The id is the `id` field, or the example's index in this source if there
      is none (tfds `mnist`), as in `InputPipeline`.
    - "threshold": grey >= grey_max / 2 (for digits, 8 of 16: digits_binarized's `image`).

    Every other field passes through unchanged. `len`, `source[i]`, `__getitems__` and
    `get_batch` (used by `gather`, so `eval_batches` gathers whole batches and binarizes them
    in one vectorized call) work whatever the wrapped source has; `arrays` (all fields as
    arrays, what `InMemorySource` offers) exists when the wrapped source has it and is
    computed once, on first use.
    """

    def __init__(self, source: Sequence[Mapping[str, Any]], mode: str, *, grey_max: int = 16,
                 seed: int = 0):
        """Wraps `source` (nothing is read but its first example's field names).

        Args:
          source: a random-access source (`len`, `source[i] -> dict`).
          mode: "bernoulli" or "threshold" (see the class docstring).
          grey_max: the grey level meaning probability 1 (16 for digits, 255 for uint8).
          seed: the "bernoulli" sample's seed (non-negative); the trainer uses 0 for the eval
            split and 1 for the training split, so that their bits are unrelated.
        """
        if mode not in BINARIZE_MODES:
            raise ValueError(f"binarization mode {mode!r} is not one of {BINARIZE_MODES}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self._source = source
        self._mode = mode
        self._grey_max = _check_grey_max(grey_max)
        self._seed = int(seed)
        self._n = len(source)
        self._field = _grey_field(source, "BinarizedSource") if self._n else "image"
        self._arrays: Mapping[str, np.ndarray] | None = None

    @property
    def mode(self) -> str:
        """The mode: "bernoulli" or "threshold"."""
        return self._mode

    @property
    def grey_max(self) -> int:
        """The grey level meaning probability 1."""
        return self._grey_max

    def binarize(self, batch: Mapping[str, np.ndarray], indices: np.ndarray
                 ) -> dict[str, np.ndarray]:
        """`batch` (examples `indices` of the wrapped source) with its `image` binarized."""
        grey = np.asarray(batch[self._field])
        if self._mode == "threshold":
            bits = (grey.astype(np.int64) * 2 >= self._grey_max).astype(np.uint8)
        else:
            ids = batch["id"] if "id" in batch else indices
            bits = bernoulli_bits(grey, ids, seed=self._seed, epoch=FIXED_BINARIZATION_EPOCH,
                                  grey_max=self._grey_max)
        out = dict(batch)
        out["image"] = bits
        return out

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        for i in indices:
            if not -self._n <= i < self._n:
                raise IndexError(f"index {i} out of range for {self._n} examples")
        batch = self.get_batch(np.array([int(i) % self._n for i in indices], dtype=np.int64))
        return [{k: v[j] for k, v in batch.items()} for j in range(len(indices))]

    def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Gathers examples `indices` (non-negative) as a dict of arrays, `image` binarized."""
        indices = np.asarray(indices)
        if self._arrays is not None:
            return {k: v[indices] for k, v in self._arrays.items()}
        return self.binarize(gather(self._source, indices), indices)

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """Every field as a read-only array (len, ...), `image` binarized; only when the
        wrapped source has `arrays` (an `InMemorySource`). Computed once, in chunks."""
        if self._arrays is None:
            inner = self._source.arrays  # AttributeError (no `arrays`) when it has none
            chunks = [self.binarize({k: v[s:s + 4096] for k, v in inner.items()},
                                    np.arange(s, min(s + 4096, self._n)))["image"]
                      for s in range(0, self._n, 4096)]
            images = (np.concatenate(chunks) if chunks
                      else np.zeros((0,) + np.shape(inner[self._field])[1:], np.uint8))
            arrays = {**inner, "image": images}
            for v in arrays.values():
                v.flags.writeable = False
            self._arrays = arrays
        return self._arrays


def make_global_batch(local_batch: Mapping[str, np.ndarray],
                      sharding: jax.sharding.Sharding | Mapping[str, jax.sharding.Sharding],
                      *, keys: Sequence[str] | None = None) -> dict[str, jax.Array]:
    """Assembles every host's local batch into global arrays laid out by `sharding`.

    Multi-process, this is `jax.make_array_from_process_local_data` on the whole dict (one
    call). With one process the local batch is the global batch, and the equivalent
    `jax.device_put` is used: it is 2-3x cheaper per batch and asynchronous. Each field
    costs a transfer (~0.1-0.2 ms of host time on CPU), so pass `keys` to send only the
    fields the step uses.

    Args:
      local_batch: this host's part of the batch (field -> array), e.g. from `InputPipeline`.
      sharding: one sharding for every field (typically the batch axis split over the data
        mesh axis), or a dict with one per field.
      keys: the fields to transfer (default: all).

    Returns:
      field -> `jax.Array` whose leading axis is the global batch.
    """
    local_batch = {k: local_batch[k] for k in (local_batch if keys is None else keys)}
    if isinstance(sharding, Mapping):
        sharding = {k: sharding[k] for k in local_batch}
    if jax.process_count() == 1:
        return jax.device_put(local_batch, sharding)
    if isinstance(sharding, Mapping):
        return {k: jax.make_array_from_process_local_data(sharding[k], np.asarray(v))
                for k, v in local_batch.items()}
    return jax.make_array_from_process_local_data(
        sharding, {k: np.asarray(v) for k, v in local_batch.items()})
