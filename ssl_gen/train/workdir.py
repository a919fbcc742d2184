"""The run directory: never mix up two runs, never lose a record.

A workdir holds one run: `config.json` (the config it was started with, updated only
through a recorded change), `checkpoints/`, `metrics.jsonl`, `final_metrics.json`, plots.

- `prepare(workdir)`: creates it, or a one-line error if it is a file or not writable.
- `config_changes(workdir, config)`: the differences between the stored config and this
  one, as `{dotted.key: (old, new)}`. The trainer refuses to resume under a difference that
  changes training (`require_same`) unless the user asks for it explicitly; the settings in
  `HARMLESS` (how often to log or save, the progress bar, where the data lives, the device
  count, the state's sharding, the loader's workers) may change freely. Every accepted
  change is appended to `config_history.jsonl`.
- `finished(workdir)`: the final metrics of a finished run, so a rerun of the same command
  repeats nothing.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from ssl_gen.train.config_check import ConfigError

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
FINAL_FILE = "final_metrics.json"
# Settings that do not change what is trained: a resumed run may take new values silently
# (still recorded in config_history.jsonl). Prefixes of dotted keys.
HARMLESS = ("progress_bar", "prefetch", "log_every_steps", "checkpoint_every_steps",
            "keep_checkpoints", "num_devices", "dataset.data_dir", "sharding",
            "fsdp_min_size", "dataset.num_workers")


def prepare(workdir: str) -> None:
    """Creates `workdir`; a `ConfigError` if that is impossible (a file, no permission)."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir} is a file, not a directory: pick another path")
    try:
        os.makedirs(workdir, exist_ok=True)
        # One probe per process: the hosts of a multi-host run prepare the same workdir.
        probe = os.path.join(workdir, f".ssl_gen_write_probe.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"--workdir={workdir} is not writable ({e.strerror or e}): "
                          "pick a directory you can write to") from None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def _as_json(config) -> dict:
    return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
        else json.loads(json.dumps(config, default=str))


def stored_config(workdir: str) -> dict | None:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # unreadable: the run's record is gone, nothing to compare with


def config_changes(workdir: str, config) -> dict[str, tuple[Any, Any]]:
    """`{dotted.key: (stored, new)}` for every difference; `{}` without a stored config."""
    old = stored_config(workdir)
    if old is None:
        return {}
    a, b = _flatten(old), _flatten(_as_json(config))
    missing = object()
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)}


def is_harmless(key: str) -> bool:
    return any(key == h or key.startswith(h + ".") for h in HARMLESS)


def _show(changes: dict[str, tuple[Any, Any]], most: int = 4) -> str:
    parts = [f"{k}: {json.dumps(o)} -> {json.dumps(n)}" for k, (o, n) in changes.items()]
    more = f"; and {len(parts) - most} more" if len(parts) > most else ""
    return "; ".join(parts[:most]) + more


def require_same(workdir: str, changes: dict[str, tuple[Any, Any]]) -> None:
    """A one-line `ConfigError` if `changes` holds any that changes training."""
    real = {k: v for k, v in changes.items() if not is_harmless(k)}
    if real:
        raise ConfigError(
            f"--workdir={workdir} holds a run started with a different config ({_show(real)}): "
            "use a new --workdir, or pass --allow_config_change to resume this run under the "
            f"new config (recorded in {HISTORY_FILE})")


def record(workdir: str, config, changes: dict[str, tuple[Any, Any]],
           step: int | None) -> None:
    """Writes `config.json`; appends `changes` (if any) to the history with the step."""
    if changes:
        row = {"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               "resumed_at_step": step,
               "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}}
        with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
            f.write(json.dumps(row) + "\n")
    tmp = os.path.join(workdir, CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, os.path.join(workdir, CONFIG_FILE))


def finished(workdir: str) -> dict[str, float] | None:
    """The final metrics of a run that finished in `workdir`, or None."""
    path = os.path.join(workdir, FINAL_FILE)
    try:
        with open(path) as f:
            final = json.load(f)
    except (OSError, ValueError):
        return None
    return None if "preempted" in final else final
