"""Checkpoints: the only module that imports orbax.

A checkpoint holds the train state (a pytree of arrays) and the input pipeline's position
(a small JSON dict), so a resumed run sees exactly the batches it would have seen.

- Saves every `save_every_steps`, keeps the newest `keep`, and on demand (end, SIGTERM).
  Saves are asynchronous; `close()` (or `wait()`) blocks until they are on disk, so the
  trainer calls it before exiting. A kill during a save leaves a temporary directory that
  orbax never lists as a step.
- Restore walks the steps newest-first and takes the first that restores: orbax itself does
  not fall back, it raises. A step that fails (half-written, truncated, corrupt) is moved
  aside to `<workdir>/corrupt_checkpoints/` with a warning, so a later save can reuse its
  step number.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves and restores `(state, data_state)` under `directory`.

    Args:
      directory: where step subdirectories live (created if missing).
      save_every_steps: periodic save interval (`should_save`).
      keep: how many of the newest checkpoints to keep.
      async_save: write in a background thread (the default); the trainer waits at exit.
    """

    def __init__(self, directory: str, *, save_every_steps: int, keep: int = 3,
                 async_save: bool = True):
        if save_every_steps < 1 or keep < 1:
            raise ValueError(
                f"checkpoint_every_steps and keep_checkpoints must be >= 1, "
                f"got {save_every_steps} and {keep}")
        self.directory = os.path.abspath(directory)
        self.save_every_steps = save_every_steps
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def should_save(self, step: int) -> bool:
        return step > 0 and step % self.save_every_steps == 0

    def save(self, step: int, state: Any, data_state: dict) -> None:
        """Starts writing step `step` (returns before it is on disk when async)."""
        if step in self._manager.all_steps():
            return  # already saved (e.g. the final save right after a periodic one)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state))
        self._manager.save(step, args=args, force=True)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, data_state) from the newest checkpoint that restores, or None.

        Args:
          abstract_state: a pytree of `jax.ShapeDtypeStruct`s with shardings, the target.
        """
        for step in reversed(self.all_steps()):
            try:
                args = ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
                out = self._manager.restore(step, args=args)
                return step, out["state"], dict(out["data"])
            except Exception as e:  # noqa: BLE001 - any failure means "this one is unusable"
                log.warning("checkpoint step %d in %s does not restore (%s: %s); "
                            "falling back to an older one", step, self.directory,
                            type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
                self._set_aside(step)
        return None

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            src = os.path.join(self.directory, str(step))
            dst_dir = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
            if os.path.exists(src):
                os.makedirs(dst_dir, exist_ok=True)
                dst = os.path.join(dst_dir, str(step))
                shutil.rmtree(dst, ignore_errors=True)
                shutil.move(src, dst)
        self._manager.reload()

    def reached_preemption(self, step: int) -> bool:
        """True on every host once any host got a preemption notice (needs jax.distributed)."""
        return self._manager.reached_preemption(step)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
