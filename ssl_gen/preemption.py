"""SIGTERM and Ctrl-C (SIGINT) as a flag that long work polls, so a run stops within seconds
wherever it is, saves, and says so in one line.

    with preemption.guard():
        while ...:
            if preemption.requested():
                save(); return

- The first SIGTERM or SIGINT only sets the flag: the training loop checks it every step,
  evaluations between batches or chunks (through `EvalContext.should_stop`), the estimator
  comparison between runs and inside each. The work saves a checkpoint and returns.
- A second Ctrl-C exits at once (status 130) without saving: the run then resumes from its
  last periodic checkpoint. A second SIGTERM changes nothing.
- `exit_status(signum)` is the shell's convention, 128 + the signal (SIGTERM 143,
  SIGINT 130): every command line of ssl_gen exits with it after a preemption, so a job
  scheduler sees the same status from each.

Guards nest: an inner guard (the trainer inside the comparison) shares the outer one's flag
and leaves its handlers alone. Handlers can only be installed from the main thread; in any
other thread (a notebook's worker) `guard()` installs nothing and `requested()` stays None.
With several processes the trainer leaves SIGTERM to JAX's own preemption notifier, which
tells every host at the same step (`guard(enabled=False)`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_requested: int | None = None
_depth = 0


def _handle(signum, frame) -> None:
    global _requested
    del frame
    if _requested is not None and signum == signal.SIGINT:
        sys.stderr.write("second interrupt: exiting now without saving (the run resumes "
                         "from its last checkpoint)\n")
        sys.stderr.flush()
        os._exit(exit_status(signal.SIGINT))
    if _requested is None:
        _requested = signum


@contextlib.contextmanager
def guard(enabled: bool = True) -> Iterator[None]:
    """Turns SIGTERM/SIGINT into the `requested()` flag for the duration (see the module
    docstring); the previous handlers come back on exit."""
    global _depth, _requested
    install = (enabled and _depth == 0
               and threading.current_thread() is threading.main_thread())
    old = {}
    if install:
        _requested = None
        old = {s: signal.signal(s, _handle) for s in SIGNALS}
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        for s, handler in old.items():
            signal.signal(s, handler)


def requested() -> int | None:
    """The signal that asked this process to stop (SIGTERM or SIGINT), or None."""
    return _requested


def describe(signum: int | None) -> str:
    """'Ctrl-C' for SIGINT, 'SIGTERM' for SIGTERM: how the one-line messages name a stop."""
    return {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}.get(signum, f"signal {signum}")


def exit_status(signum: int | None) -> int:
    """128 + signum (SIGTERM: 143, SIGINT: 130): the status every CLI exits with."""
    return 128 + int(signum or signal.SIGTERM)
