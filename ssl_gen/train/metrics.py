"""Metric writers and curves: JSON lines, TensorBoard event files, PNG plots.

Only process 0 writes. `metrics.jsonl` in the workdir has one object per write,
`{"step": N, "split": "train" | "eval" | ..., name: value, ...}`; TensorBoard events go
to `workdir/tensorboard` (tensorboardX, so no TensorFlow is needed);
`plot_curves` turns the JSON lines into `workdir/plots/curves.png`.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict

import jax

SUPERSEDED = "metrics_superseded.jsonl"


def supersede_after(path: str, step: int) -> int:
    """Moves the rows of `path` logged after `step` to `metrics_superseded.jsonl` beside it.

    A run resumed from the checkpoint at `step` logs those steps again; keeping both would
    put two rows per step in the file (and two curves in the plots). Nothing is deleted:
    the moved rows, and a line cut short by a kill, go to the superseded file. Returns how
    many rows moved.
    """
    if not os.path.exists(path):
        return 0
    keep, moved = [], []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                later = json.loads(line)["step"] > step
            except (ValueError, KeyError, TypeError):
                later = True  # a line cut short by a kill
            (moved if later else keep).append(line if line.endswith("\n") else line + "\n")
    if moved:
        with open(os.path.join(os.path.dirname(path), SUPERSEDED), "a") as f:
            f.writelines(moved)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)
    return len(moved)


class MetricWriter:
    """Appends scalars to `metrics.jsonl` and TensorBoard; a no-op off process 0.

    Args:
      workdir: the run directory.
      tensorboard: also write TensorBoard event files (`workdir/tensorboard`).
      resume_step: the step a resumed run restarts from (0 for a fresh start): rows already
        logged after it are moved aside (`supersede_after`), and TensorBoard is told to
        drop its events after it (`purge_step`), so every step has one row.
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True, resume_step: int = 0):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            moved = supersede_after(self.path, resume_step)
            self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30,
                                         purge_step=resume_step + 1 if moved else None)

    def logged(self, step: int, split: str) -> bool:
        """Whether a row of `split` at `step` is in the file (e.g. a resumed run's evals)."""
        if not os.path.exists(self.path):
            return False
        return any(r.get("step") == step and r.get("split") == split
                   for r in read_metrics(self.path))

    def write(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        if not self.active:
            return
        clean = {k: float(v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": int(step), "split": split, **clean}) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.active:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(path: str) -> list[dict]:
    """The rows of a metrics.jsonl (a last line cut short by a kill is left out)."""
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    return rows


def group_panels(series: dict[str, dict[int, float]]) -> dict[str, dict[str, dict[int, float]]]:
    """`split/metric` series -> panel title -> line label -> series.

    Nested metrics `<prefix>/<name>/<stat>` (the gradient tracker's `gradvar/<estimator>/
    <statistic>`) share the panel `split/<prefix>/*/<stat>`, one line per name; every other
    series is a panel of its own with one unlabeled ("") line.
    """
    panels: dict[str, dict[str, dict[int, float]]] = defaultdict(dict)
    for key, values in series.items():
        split, _, metric = key.partition("/")
        parts = metric.split("/")
        if len(parts) >= 3:
            panels[f"{split}/{parts[0]}/*/{'/'.join(parts[2:])}"][parts[1]] = values
        else:
            panels[key][""] = values
    return dict(panels)


def plot_curves(workdir: str, names: tuple[str, ...] | None = None) -> str | None:
    """Plots every (split, metric) series of `metrics.jsonl` against step; returns the PNG path.

    Metrics named `<prefix>/<name>/<stat>` are drawn together, one panel per (prefix, stat)
    and a line per name (e.g. `gradvar/*/log_variance`, a line per estimator). A resumed run
    may have written some steps twice; the later write wins.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() != 0 or not os.path.exists(path):
        return None
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend is left alone

    series: dict[str, dict[int, float]] = defaultdict(dict)
    for row in read_metrics(path):
        if row["split"] == "final":  # one point per metric: the final_metrics.json table
            continue
        for k, v in row.items():
            if k in ("step", "split") or (names and k not in names):
                continue
            if isinstance(v, (int, float)) and math.isfinite(v):
                series[f"{row['split']}/{k}"][row["step"]] = v
    if not series:
        return None
    panels = group_panels(series)
    keys = sorted(panels)
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for label, values in sorted(panels[key].items()):
            steps = sorted(values)
            ax.plot(steps, [values[s] for s in steps], label=label or None,
                    marker="." if len(steps) < 30 else None)
        if len(panels[key]) > 1 or "" not in panels[key]:
            ax.legend(fontsize=6)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    out = os.path.join(workdir, "plots", "curves.png")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
