"""The input pipeline on grain: deterministic, resumable, multi-host batches from a source.

Why this shape: the trainer needs (1) the same batches on a resumed run as on an uninterrupted
one, (2) each host to read only its own part of every global batch, with the parts of all
hosts together forming the same global batch whatever the number of hosts, (3) CPU-heavy
augmentation off the training thread, and (4) a per-batch cost far below a ~1 ms train step.

The examples form one endless stream, epoch after epoch (batches straddle epoch boundaries;
nothing is dropped):

- epoch `e` visits the examples in the order `np.random.default_rng([seed, e]).permutation(n)`
  (`arange(n)` without shuffling); stream position `q` is example `perm_{q // n}[q % n]`;
- global batch `b` is stream positions `[b * G, (b + 1) * G)`;
- host `p` of `P` takes the contiguous slice `[b * G + p * G/P, b * G + (p + 1) * G/P)`;
- the preprocessing ops (`ssl_gen.data.preprocess`) run on that local batch, their
  randomness a function of (seed, epoch, example id), not of where the example lands.

What grain does: the local batches are a `grain.MapDataset` over batch numbers (random access:
batch `b` is computed from `b` alone), iterated by a grain iterator; with `num_workers > 0`
grain's `mp_prefetch` computes them in worker processes (each worker a slice of the batch
numbers, its output merged back in order), so what comes out is the same with 0 or N workers.
The position is one int, `get_state() == {"next_batch": b}`, the same on every host and for
any worker count; the checkpoint stores it as JSON next to the train state.

What grain does not do here, and why:

- the sampler. grain's `shuffle` (a Feistel `index_shuffle` per element) cost 37 us per
  element at n = 1,437 (400 us at n = 100, 7 us at n = 60,000; measured on the 2-core dev
  machine): 5 ms per batch of 128 digits, five train steps. The epoch permutation is one
  numpy call per epoch (cached) instead.
- per-host sharding. grain's `ShardByJaxProcess` splits the *examples* between hosts, each
  host shuffling its own shard: the hosts' batches together are then not the one-host batch,
  and a run cannot resume on another number of hosts. Slicing each global batch keeps both.
- per-example batching. `ds.batch` stacks examples one by one in Python; a fancy-index
  gather (`gather`) and vectorized ops take microseconds for a whole batch.

`eval_batches` is the in-order, padded pass over an eval split; `PreprocessedSource` is a
source seen through the deterministic (evaluation) form of a list of ops.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

from ssl_gen.data import preprocess as pp

# Batch numbers run to sys.maxsize: a MapDataset needs a length, the run never reaches it.
_ENDLESS = sys.maxsize


def gather(source: Sequence[Mapping[str, Any]], indices: np.ndarray) -> dict[str, np.ndarray]:
    """Examples `indices` of `source` as a dict of arrays with a leading batch axis.

    Args:
      source: a random-access source; `get_batch` and `__getitems__` are used if present.
      indices: int array of example indices.

    Returns:
      field -> array (len(indices), ...); a field whose examples differ in shape (tfds'
      ImageNet, images of their own sizes) is a list of arrays, which the first ops run on
      one example at a time until it has one shape (`preprocess.apply`). Text fields (tfds'
      string `id`s, `file_name`s) are dropped: nothing on a device reads them.
    """
    if hasattr(source, "get_batch"):
        return source.get_batch(indices)
    index_list = [int(i) for i in indices]
    if hasattr(source, "__getitems__"):
        records = source.__getitems__(index_list)
    else:
        records = [source[i] for i in index_list]
    out = {}
    for k in records[0]:
        values = [np.asarray(r[k]) for r in records]
        if values[0].dtype.kind in "USO":
            continue
        same = all(v.shape == values[0].shape for v in values)
        out[k] = np.stack(values) if same else values
    return out


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


class LocalBatch:
    """Batch number -> this host's part of that global batch, preprocessed (a grain map fn).

    A pure function of the batch number (the permutation cache only saves time), so grain
    may call it in any process, in any order. Picklable: workers receive a copy.
    """

    def __init__(self, source, *, global_batch_size: int, local_batch_size: int,
                 process_index: int, seed: int, shuffle: bool, ops: Sequence[pp.Op]):
        self.source, self.n, self.seed, self.shuffle = source, len(source), seed, shuffle
        self.offsets = process_index * local_batch_size + np.arange(local_batch_size)
        self.global_batch_size, self.ops = global_batch_size, tuple(ops)
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """The order in which epoch `epoch` visits the source's examples."""
        perm = self._perms.get(epoch)
        if perm is None:
            perm = (np.random.default_rng([self.seed, epoch]).permutation(self.n)
                    if self.shuffle else np.arange(self.n))
            if len(self._perms) >= 4:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = perm
        return perm

    def positions(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(epoch, source index) of each example of this host's part of global batch `b`."""
        q = b * self.global_batch_size + self.offsets
        epochs, pos = np.divmod(q, self.n)
        if epochs[0] == epochs[-1]:  # the common case: one epoch
            return epochs, self.permutation(int(epochs[0]))[pos]
        indices = np.empty_like(pos)
        for e in np.unique(epochs):  # one or two epochs (more only when G > n)
            at = epochs == e
            indices[at] = self.permutation(int(e))[pos[at]]
        return epochs, indices

    def __call__(self, b: int) -> dict[str, np.ndarray]:
        epochs, indices = self.positions(int(b))
        batch = gather(self.source, indices)
        if self.ops:
            ids = batch["id"] if "id" in batch else indices
            batch = pp.apply(self.ops, batch, pp.Context.make(self.seed, epochs, ids))
        return batch

    def __getstate__(self):
        return {**self.__dict__, "_perms": {}}


class InputPipeline:
    """An endless iterator over this host's part of each global training batch (on grain).

    Yields dicts of numpy arrays with a leading axis of `global_batch_size // process_count`.
    See the module docstring for the order, the slicing and what grain does.
    """

    def __init__(self, source: Sequence[Mapping[str, Any]], *, global_batch_size: int,
                 seed: int, shuffle: bool = True, process_index: int | None = None,
                 process_count: int | None = None, preprocess: Sequence[Any] = (),
                 num_workers: int = 0, worker_buffer_size: int = 2,
                 dynamic_binarization: bool = False, grey_max: int = 16):
        """Creates the pipeline at batch 0 (nothing runs until the first `next`).

        Args:
          source: random-access source (`len`, `source[i] -> dict`), e.g. from `get_source`.
          global_batch_size: examples per global batch, over all processes (may exceed the
            source's size: a batch then holds several epochs).
          seed: non-negative int; the epoch permutations and the ops' randomness derive
            from it.
          shuffle: permute the examples every epoch (else source order every epoch).
          process_index: this host's index (default `jax.process_index()`).
          process_count: number of hosts (default `jax.process_count()`).
          preprocess: ops (`preprocess.parse` output, or specs to parse) applied to each
            local batch in training form.
          num_workers: grain worker processes computing batches (0: in the calling thread).
            The batches are the same for every value.
          worker_buffer_size: batches each worker holds ready.
          dynamic_binarization, grey_max: the old spelling of a first
            `{"name": "binarize", "mode": "dynamic", "grey_max": grey_max}` op (kept until
            the trainer calls `build_inputs`).
        """
        self._process_index, self._process_count = _processes(process_index, process_count)
        self._local = _check_batch_size(global_batch_size, self._process_count)
        if len(source) == 0:
            raise ValueError("InputPipeline: the source is empty")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if num_workers < 0 or worker_buffer_size < 1:
            raise ValueError(f"num_workers must be >= 0 and worker_buffer_size >= 1, got "
                             f"{num_workers} and {worker_buffer_size}")
        ops = tuple(preprocess)
        if not all(isinstance(op, pp.Op) for op in ops):
            ops = pp.parse(ops)
        if dynamic_binarization:
            ops = pp.parse([{"name": "binarize", "mode": "dynamic", "grey_max": grey_max}]) + ops
        self._fn = LocalBatch(source, global_batch_size=global_batch_size,
                              local_batch_size=self._local, process_index=self._process_index,
                              seed=int(seed), shuffle=shuffle, ops=ops)
        self._options = grain.MultiprocessingOptions(
            num_workers=num_workers, per_worker_buffer_size=worker_buffer_size)
        self._next_batch = 0
        self._iterator = None

    @property
    def dataset(self) -> grain.MapDataset:
        """The local batches as a grain `MapDataset`: `dataset[b]` is this host's part of
        global batch b (random access; does not move the iterator)."""
        return grain.MapDataset.range(0, _ENDLESS).map(self._fn)

    @property
    def local_batch_size(self) -> int:
        """Examples per yielded (host-local) batch."""
        return self._local

    def permutation(self, epoch: int) -> np.ndarray:
        """The order in which epoch `epoch` visits the source's examples."""
        return self._fn.permutation(epoch)

    def get_state(self) -> dict[str, int]:
        """The position (next batch to yield) as plain ints, for checkpoints."""
        return {"next_batch": self._next_batch}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Moves to a position returned by `get_state` (possibly of another process)."""
        if "next_batch" not in state:
            raise ValueError(f"pipeline state {dict(state)} is not this pipeline's (expected "
                             "{'next_batch': int}; a checkpoint of the pre-grain pipeline "
                             "cannot resume its batches): start a new workdir")
        b = state["next_batch"]
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 0:
            raise ValueError(f"invalid pipeline state {dict(state)}: next_batch must be an int "
                             ">= 0")
        self.close()
        self._next_batch = int(b)

    def _start(self) -> Iterator[dict[str, np.ndarray]]:
        ds = grain.MapDataset.range(self._next_batch, _ENDLESS).map(self._fn)
        # In memory: no reader threads (grain's own advice); DevicePrefetcher overlaps.
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        if self._options.num_workers:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags (defaults)
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(self._options)
        return iter(ds)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = self._start()
        batch = next(self._iterator)
        self._next_batch += 1
        return batch

    def close(self) -> None:
        """Stops grain's worker processes, if any (the position is kept)."""
        it, self._iterator = self._iterator, None
        if it is not None and hasattr(it, "close"):
            it.close()


def eval_batches(source: Sequence[Mapping[str, Any]], global_batch_size: int, *,
                 process_index: int | None = None, process_count: int | None = None
                 ) -> Iterator[dict[str, np.ndarray]]:
    """One in-order pass over the whole source, this host's part of each global batch.

    Global batch `b` holds examples `b * G .. (b + 1) * G - 1` of the source; the last one is
    padded (with copies of example 0) to the full size. Every batch has a float32
    `example_mask`: 1 for real examples, 0 for padding, so each example counts exactly once
    over all hosts. (grain's `batch(drop_remainder=False)` would give a short last batch, a
    new shape and a recompilation.)

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
        batch["example_mask"] = valid.astype(np.float32)
        yield batch


class PreprocessedSource:
    """A read-only view of a random-access source through the evaluation form of some ops.

    Example i of the view is example i of the source with the ops applied at
    `Context(seed, FIXED_EPOCH, example id, train=False)`: deterministic, the same on every
    host and access path (e.g. a fixed Bernoulli binarization, a resize). `len`, `source[i]`,
    `__getitems__` and `get_batch` (what `gather` and so `eval_batches` use: one vectorized
    call per batch) work whatever the wrapped source has; `arrays` (every field as an array,
    what `InMemorySource` offers and `pixel_baseline` reads) exists when the wrapped source
    has it and is computed once, on first use.
    """

    def __init__(self, source: Sequence[Mapping[str, Any]], ops: Sequence[Any], *,
                 seed: int = 0):
        """Wraps `source` (nothing is read).

        Args:
          source: a random-access source (`len`, `source[i] -> dict`).
          ops: ops (`preprocess.parse` output, or specs to parse).
          seed: the ops' seed (non-negative); the trainer uses 0 for the eval split and 1 for
            the training split, so that a fixed Bernoulli sample of each is unrelated.
        """
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        ops = tuple(ops)
        self._ops = ops if all(isinstance(op, pp.Op) for op in ops) else pp.parse(ops)
        self._source, self._seed, self._n = source, int(seed), len(source)
        self._arrays: Mapping[str, np.ndarray] | None = None

    @property
    def ops(self) -> tuple[pp.Op, ...]:
        return self._ops

    def apply(self, batch: Mapping[str, np.ndarray], indices: np.ndarray
              ) -> dict[str, np.ndarray]:
        """`batch` (examples `indices` of the wrapped source) through the ops."""
        ids = batch["id"] if "id" in batch else indices
        ctx = pp.Context.make(self._seed, pp.FIXED_EPOCH, ids, train=False)
        return pp.apply(self._ops, batch, ctx)

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
        """Gathers examples `indices` (non-negative) as a dict of arrays, preprocessed."""
        indices = np.asarray(indices)
        if self._arrays is not None:
            return {k: v[indices] for k, v in self._arrays.items()}
        return self.apply(gather(self._source, indices), indices)

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """Every field as a read-only array (len, ...), preprocessed; only when the wrapped
        source has `arrays` (an `InMemorySource`). Computed once, in chunks."""
        if self._arrays is None:
            inner = self._source.arrays  # AttributeError (no `arrays`) when it has none
            chunks = [self.apply({k: v[s:s + 4096] for k, v in inner.items()},
                                 np.arange(s, min(s + 4096, self._n)))
                      for s in range(0, self._n, 4096)]
            arrays = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
            for v in arrays.values():
                v.flags.writeable = False
            self._arrays = arrays
        return self._arrays


class BinarizedSource(PreprocessedSource):
    """The old spelling of `PreprocessedSource(source, [binarize(mode, grey_max)], seed=seed)`
    (kept until the trainer calls `build_inputs`)."""

    def __init__(self, source, mode: str, *, grey_max: int = 16, seed: int = 0):
        if mode not in pp.BINARIZE_MODES:
            raise ValueError(f"binarization mode {mode!r} is not one of {pp.BINARIZE_MODES}")
        super().__init__(source, [{"name": "binarize", "mode": mode, "grey_max": grey_max}],
                         seed=seed)


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
