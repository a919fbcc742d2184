"""Checkpoints: the only module that imports orbax.

A checkpoint holds the train state (a pytree of arrays) and the input pipeline's position
(a small JSON dict), so a resumed run sees exactly the batches it would have seen.

- Saves every `save_every_steps`, keeps the newest `keep`, and on demand (end, SIGTERM).
  Saves are asynchronous; `close()` (or `wait()`) blocks until they are on disk, so the
  trainer calls it before exiting. A kill during a save leaves a temporary directory that
  orbax never lists as a step.
- Restore walks the steps newest-first and takes the first that restores: orbax itself does
  not fall back, it raises. Before reading any array it compares the checkpoint's recorded
  shapes with the target's: a checkpoint written for other shapes (another model config) is
  intact, so it is a one-line `CheckpointMismatchError` and is left exactly where it is. A
  step that fails to read (half-written, truncated, corrupt) is moved aside, never deleted,
  to `<workdir>/corrupt_checkpoints/<step>` (`<step>.1`, ... if that exists), so a later
  save can reuse its step number. Nothing else is ever removed but by `keep` rotation (and
  orbax's clean-up of its own unfinished temporary directories, which never held a step).
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ssl_gen.errors import UserError

log = logging.getLogger(__name__)


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint holds arrays of other shapes than the run's state (another config)."""


def _leaves(tree) -> list[tuple[str, tuple[int, ...]]]:
    """(path, shape) per array leaf, in flatten order (orbax metadata or abstract arrays)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
    return [(jax.tree_util.keystr(path), tuple(np.shape(leaf) if not hasattr(leaf, "shape")
                                               else leaf.shape)) for path, leaf in flat]


def shape_mismatch(saved, target) -> str | None:
    """Where the saved tree's shapes differ from the target's, in words; None if they agree.

    The parameters are compared first, so the message names a parameter rather than its
    optimizer moment.
    """
    if isinstance(saved, dict) and isinstance(target, dict) and "params" in target:
        first = _compare({"params": saved.get("params")}, {"params": target["params"]})
        if first:
            return first
    return _compare(saved, target)


def _compare(saved, target) -> str | None:
    a, b = _leaves(saved), _leaves(target)
    if len(a) != len(b):
        return f"{len(a)} arrays in the checkpoint, {len(b)} in the run's state"
    for (_, sa), (path, sb) in zip(a, b, strict=True):
        if tuple(sa) != tuple(sb):
            return f"{path or 'state'} is {tuple(sa)} in the checkpoint, {tuple(sb)} now"
    return None


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
        # Handlers named up front, so that a fresh process can read a step's metadata (the
        # shape check) before it has saved or restored anything.
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler()})

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
            self._check_shapes(step, abstract_state)
            try:
                args = ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
                out = self._manager.restore(step, args=args)
                return step, out["state"], dict(out["data"])
            except Exception as e:  # noqa: BLE001 - any failure means "this one is unusable"
                if "not compatible with the stored shape" in str(e):  # intact, other shapes
                    raise self._mismatch(step, str(e).splitlines()[0][:160]) from None
                log.warning("checkpoint step %d in %s does not restore (%s: %s); "
                            "falling back to an older one", step, self.directory,
                            type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
                self._set_aside(step)
        return None

    def _check_shapes(self, step: int, abstract_state: Any) -> None:
        """Raises `CheckpointMismatchError` if step's recorded shapes are not the target's.

        Unreadable metadata says nothing about shapes: the restore then decides (corrupt).
        """
        try:
            saved = self._manager.item_metadata(step)["state"]
            saved = getattr(saved, "tree", saved)
        except Exception:  # noqa: BLE001 - unreadable metadata: let the restore decide
            return
        if saved is None:
            return
        where = shape_mismatch(saved, abstract_state)
        if where:
            raise self._mismatch(step, where)

    def _mismatch(self, step: int, where: str) -> CheckpointMismatchError:
        return CheckpointMismatchError(
            f"checkpoint step {step} in {self.directory} was written for other shapes "
            f"({where}): it is intact and left as it is; resume with the config it was "
            "written with, or use a new --workdir")

    def _set_aside(self, step: int) -> None:
        """Moves an unreadable step to corrupt_checkpoints/ under a name not yet taken."""
        if jax.process_index() == 0:
            src = os.path.join(self.directory, str(step))
            dst_dir = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
            if os.path.exists(src):
                os.makedirs(dst_dir, exist_ok=True)
                dst, n = os.path.join(dst_dir, str(step)), 0
                while os.path.exists(dst):
                    n += 1
                    dst = os.path.join(dst_dir, f"{step}.{n}")
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


# Reading another run's checkpoint (`config.init_from`, see train/init.py): no target state,
# no fallback, and the source is never changed (nothing set aside, nothing cleaned up).


def _state_dir(step_dir: str) -> str:
    return os.path.join(os.path.abspath(step_dir), "state")  # orbax wants absolute paths


def saved_shapes(step_dir: str) -> Any:
    """The state stored in one step directory as a tree of `jax.ShapeDtypeStruct`s."""
    with ocp.PyTreeCheckpointer() as ckptr:
        meta = ckptr.metadata(_state_dir(step_dir))
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), tree,
                        is_leaf=lambda x: hasattr(x, "shape"))


def read_state(step_dir: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The top-level entries `keys` of the state stored in one step directory, as host numpy
    arrays (whatever the devices and shardings it was written with); absent keys left out."""
    shapes = saved_shapes(step_dir)
    wanted = {k: shapes[k] for k in keys if k in shapes}
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), wanted)
    restore_args = jax.tree.map(lambda s: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    with ocp.PyTreeCheckpointer() as ckptr:
        return dict(ckptr.restore(_state_dir(step_dir), args=ocp.args.PyTreeRestore(
            item=target, restore_args=restore_args, partial_restore=True)))
