"""Device prefetch: build the next batches on the host while the devices run this step.

Each item is `(device_batch, data_state)`, where `data_state` is the pipeline position just
after that batch: what a checkpoint taken after training on it must record (the pipeline
itself has already run ahead by the prefetch depth).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import jax

from ssl_gen.data.pipeline import InputPipeline, make_global_batch

_DONE = object()


class DevicePrefetcher(Iterator):
    """Iterates `(device_batch, data_state)` pairs, `size` batches ahead in a thread.

    Args:
      pipeline: the `InputPipeline` (its state must already be restored).
      sharding: the batch sharding for `make_global_batch`.
      size: how many batches to hold ready; 0 builds each batch on demand in the caller's
        thread (no thread at all).
    """

    def __init__(self, pipeline: InputPipeline, sharding: jax.sharding.Sharding, size: int = 2):
        if size < 0:
            raise ValueError(f"prefetch size must be >= 0, got {size}")
        self._pipeline, self._sharding, self._size = pipeline, sharding, size
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(size, 1))
        self._thread = None
        if size:
            self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
            self._thread.start()

    def _produce(self) -> tuple[dict[str, jax.Array], dict[str, Any]]:
        local = next(self._pipeline)
        return make_global_batch(local, self._sharding), self._pipeline.get_state()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._produce()
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer's thread
            self._queue.put(e)
        self._queue.put(_DONE)

    def __next__(self) -> tuple[dict[str, jax.Array], dict[str, Any]]:
        if self._thread is None:
            return self._produce()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if item is _DONE:
            raise StopIteration
        return item

    def close(self) -> None:
        """Stops the thread (batches it built ahead are dropped; the states stay exact), then
        the pipeline's grain workers, if it has any (`InputPipeline.close`)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.1)
                except queue.Empty:
                    pass
            self._thread.join()
        if hasattr(self._pipeline, "close"):
            self._pipeline.close()
