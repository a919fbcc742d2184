"""Rendering `ssl_gen.estimators.variance` rows: markdown/console tables and PNG plots.

Rows are `EstimatorStats` (or dicts with the same fields); nothing here computes a
statistic. Plots draw on matplotlib `Figure`s without pyplot (no display needed, and a
notebook's backend is left alone) and are written where asked; each function returns the
path it wrote.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# (field, header) of the default table, in order; `time_s` is shown in microseconds.
COLUMNS = (
    ("name", "estimator"),
    ("num_samples", "K"),
    ("evals", "f evals"),
    ("unbiased", "unbiased"),
    ("bias", "bias"),
    ("bias_floor", "bias floor"),
    ("variance", "variance"),
    ("snr", "SNR"),
    ("cosine", "cosine"),
    ("time_s", "time (us)"),
)


def as_dict(row: Any) -> dict[str, Any]:
    """A row as a dict (an `EstimatorStats` NamedTuple or a mapping)."""
    return dict(row._asdict()) if hasattr(row, "_asdict") else dict(row)


def _format(field: str, value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "-"
    if field == "time_s":
        return f"{value * 1e6:.0f}"
    return f"{value:.3g}"


def markdown_table(rows: Sequence[Any], columns: Sequence[tuple[str, str]] = COLUMNS,
                   extra: Mapping[str, str] | None = None) -> str:
    """A markdown table (readable as is on a console) with one line per row.

    Args:
      rows: `EstimatorStats` or dicts.
      columns: (field, header) pairs; fields missing from a row print "-".
      extra: field -> header of more columns, appended (e.g. a sweep's "k").
    """
    columns = list(columns) + list((extra or {}).items())
    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in map(as_dict, rows):
        cells = [_format(f, row[f]) if f in row else "-" for f, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(panels: int, width: float, height: float = 3.6, **subplots_kw):
    """(figure, 1-D array of `panels` axes in a row), without pyplot, so a notebook's
    backend is left alone. `width` is per panel; `subplots_kw` goes to `Figure.subplots`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, height))
    return fig, np.atleast_1d(fig.subplots(1, panels, **subplots_kw))


def save_figure(fig, path: str, *, title: str = "", legend=None, dpi: int = 100) -> str:
    """Adds the legend (on axes `legend`) and the title, lays out and writes `path`."""
    if legend is not None:
        legend.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def plot_rows(rows: Sequence[Any], path: str, title: str = "") -> str:
    """Bars per estimator: variance (log), bias against its noise floor (log), SNR, cosine."""
    rows = [as_dict(r) for r in rows]
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    fig, axes = figure(4, 4)
    panels = [("variance", "variance (trace)", True), ("bias", "bias |mean - truth|", True),
              ("snr", "SNR (per coordinate)", False), ("cosine", "cosine to truth", False)]
    for ax, (field, label, log) in zip(axes, panels, strict=True):
        values = np.array([float(r[field]) for r in rows])
        ax.bar(x, np.where(np.isfinite(values), values, 0.0), color="C0")
        if field == "bias":
            floor = [float(r["bias_floor"]) for r in rows]
            ax.plot(x, floor, "k_", markersize=14, label="noise floor")
            ax.legend(fontsize=7)
        if log and np.any(values > 0):
            ax.set_yscale("log")
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
    return save_figure(fig, path, title=title)


def plot_sweep(rows: Sequence[Any], x_field: str, path: str, title: str = "",
               fields: Sequence[str] = ("variance", "bias", "snr")) -> str:
    """One line per estimator of each field against `x_field` (a sweep, e.g. over k)."""
    rows = [as_dict(r) for r in rows]
    names = list(dict.fromkeys(r["name"] for r in rows))
    fig, axes = figure(len(fields), 4.5)
    for ax, field in zip(axes, fields, strict=True):
        for name in names:
            mine = sorted((r for r in rows if r["name"] == name), key=lambda r: r[x_field])
            xs = [float(r[x_field]) for r in mine]
            ys = [float(r[field]) for r in mine]
            ax.plot(xs, ys, "o-", label=name, markersize=3)
        if field.startswith(("var", "bias", "time")):  # positive, spanning decades
            ax.set_yscale("log")
        ax.set_xlabel(x_field)
        ax.set_title(field, fontsize=9)
    return save_figure(fig, path, title=title, legend=axes[0])


def plot_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str,
                x: str = "step", title: str = "") -> str:
    """Curves along a trajectory: `curves[name][field]` per estimator, one panel per field
    other than `x` (e.g. loss and log-variance of the gradient along training)."""
    fields = [f for f in next(iter(curves.values())) if f != x]
    fig, axes = figure(len(fields), 4.5)
    for ax, field in zip(axes, fields, strict=True):
        for name, curve in curves.items():
            ax.plot(curve[x], curve[field], label=name, linewidth=1)
        ax.set_xlabel(x)
        ax.set_title(field, fontsize=9)
    return save_figure(fig, path, title=title, legend=axes[0])
