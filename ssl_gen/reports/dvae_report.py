r"""The discrete-VAE estimator comparison's report: a table per estimator and curves.

Reads what the trainer wrote into each run directory of a sweep (`final_metrics.json`,
`metrics.jsonl`; see `ssl_gen.runners.dvae_comparison`, which runs the sweep) and writes
`report.md` and two plots into the sweep's directory. Nothing here trains or computes a
gradient: it only summarizes logged metrics, so it can be re-run on finished sweeps.

Columns, per estimator (mean over seeds, with the spread "± sd" when there are several):
  f evals / step   decoder evaluations per example per step (the objective's `fevals`):
                   equal budgets of function evaluations are the fair comparison
  test ELBO        the 1-sample ELBO on the test split at exact codes (the `iwae` eval)
  test NLL         -L_k, the importance-sampled bound with the final eval's k
  mean log-var     the mean over the run's evaluations of the tracker's `log_variance`
                   (log of the mean per-parameter variance of the encoder gradient,
                   `ssl_gen.evals.gradient_variance`), at the run's own parameters
  time / step      the median over logging intervals (the first, which compiles, left
                   out) of 1 / steps_per_sec, in milliseconds: training alone (the trainer
                   leaves evaluation time out of steps_per_sec)
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ssl_gen.reports.estimator_report import figure, save_figure

PREFIX = "gradvar/"  # the tracker's metric prefix (gradient_variance.evaluate)
FAIRNESS = ("Equal budgets of function evaluations are the fair comparison: compare "
            "estimators at the same `f evals / step` (decoder evaluations per example per "
            "step); a row with more evaluations buys its lower variance with compute.")
# (field, header) of the main table, in order.
COLUMNS = (
    ("estimator", "estimator"),
    ("seeds", "seeds"),
    ("fevals", "f evals / step"),
    ("test_elbo", "test ELBO"),
    ("test_nll", "test NLL"),
    ("mean_log_variance", "mean log-var"),
    ("time_ms", "time / step (ms)"),
    ("steps", "steps"),
)
# The tracker's statistics, averaged over each run's evaluations (a second table).
GRAD_STATS = ("log_variance", "bias", "bias_floor", "snr", "cosine")
# ... and for the table of every measured estimator, with its cost.
TRACKED_STATS = GRAD_STATS + ("fevals", "ms_per_estimate")


class Run(NamedTuple):
    """One training run of a sweep: which estimator and seed, and where it wrote."""

    estimator: str
    seed: int
    workdir: str


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _series(rows: list[dict], split: str, key: str) -> dict[int, float]:
    """step -> value of `key` in rows of `split` (a resumed run's later write wins)."""
    out = {}
    for r in rows:
        if r.get("split") == split and key in r and r[key] is not None:
            out[int(r["step"])] = float(r[key])
    return out


def final_nll(final: dict[str, float]) -> tuple[int | None, float]:
    """(k, NLL) of the largest-k importance-sampled bound `nll_iwae<k>` in a run's final
    metrics, or (None, nan) when there is none."""
    ks = sorted(int(k[len("nll_iwae"):]) for k in final if k.startswith("nll_iwae"))
    return (ks[-1], float(final[f"nll_iwae{ks[-1]}"])) if ks else (None, math.nan)


def summarize_run(run: Run) -> dict[str, Any]:
    """One run's row and curves from its workdir."""
    with open(os.path.join(run.workdir, "final_metrics.json")) as f:
        final = json.load(f)
    rows = _read_jsonl(os.path.join(run.workdir, "metrics.jsonl"))
    nll_k, nll = final_nll(final)
    speed = _series(rows, "train", "steps_per_sec")
    rates = [v for _, v in sorted(speed.items())][1:] or list(speed.values())
    fevals = _series(rows, "train", "fevals")
    finite = lambda d: [v for v in d.values() if math.isfinite(v)]
    mean = lambda vs: float(np.mean(vs)) if vs else math.nan
    gv = {s: _series(rows, "eval", f"{PREFIX}{run.estimator}/{s}") for s in GRAD_STATS}
    # Every estimator the run's tracker measured at its parameters (track="all" sweeps).
    measured = sorted({k[len(PREFIX):].rsplit("/", 1)[0] for r in rows
                       if r.get("split") == "eval" for k in r if k.startswith(PREFIX)})
    along = {m: _series(rows, "eval", f"{PREFIX}{m}/log_variance") for m in measured}
    # Every measured estimator's statistics, as mean over this run's evaluations.
    tracked = {m: {s: mean(finite(_series(rows, "eval", f"{PREFIX}{m}/{s}")))
                   for s in TRACKED_STATS} for m in measured}
    test_elbo = _series(rows, "eval", "elbo")
    if "elbo" in final and "step" in final:  # the final evaluation ends the test curve
        test_elbo[int(final["step"])] = float(final["elbo"])
    return {
        "estimator": run.estimator,
        "seed": run.seed,
        "fevals": mean(list(fevals.values())),
        "test_elbo": float(final.get("elbo", math.nan)),
        "test_nll": nll,
        "nll_k": nll_k,
        "mean_log_variance": mean(finite(gv["log_variance"])),
        "time_ms": 1e3 / float(np.median(rates)) if rates else math.nan,
        "steps": int(final.get("step", 0)),
        "grad": {s: mean(finite(v)) for s, v in gv.items()},
        "along": along,  # measured estimator -> step -> log-variance on this trajectory
        "tracked": tracked,  # measured estimator -> statistic -> mean over evaluations
        "curves": {"train ELBO (the trained objective)": _series(rows, "train", "elbo"),
                   "test ELBO (exact codes)": test_elbo,
                   "log-variance of the encoder gradient": gv["log_variance"]},
    }


def _cell(values: Sequence[float], fmt: str) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "-"
    text = format(float(np.mean(vals)), fmt)
    if len(vals) > 1:
        text += " ± " + format(float(np.std(vals, ddof=1)), fmt)
    return text


FORMATS = {"fevals": ".0f", "test_elbo": ".2f", "test_nll": ".2f",
           "mean_log_variance": ".2f", "time_ms": ".2f"}


def aggregate(summaries: Sequence[dict]) -> dict[str, list[dict]]:
    """Run summaries grouped by estimator, in sweep order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in summaries:
        groups[s["estimator"]].append(s)
    return dict(groups)


def markdown_table(summaries: Sequence[dict]) -> str:
    """The main table: one line per estimator (means over seeds)."""
    groups = aggregate(summaries)
    ks = {s["nll_k"] for s in summaries if s["nll_k"]}
    headers = [h if f != "test_nll" or len(ks) != 1 else f"test NLL (k={ks.pop()})"
               for f, h in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for name, runs in groups.items():
        cells = []
        for field, _ in COLUMNS:
            if field == "estimator":
                cells.append(name)
            elif field == "seeds":
                cells.append(str(len(runs)))
            elif field == "steps":
                cells.append(str(max(r["steps"] for r in runs)))
            else:
                cells.append(_cell([r[field] for r in runs], FORMATS[field]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gradient_table(summaries: Sequence[dict]) -> str:
    """The tracker's statistics per estimator, averaged over the trajectory's evaluations."""
    groups = aggregate(summaries)
    lines = ["| estimator | " + " | ".join(GRAD_STATS) + " |",
             "|---|" + "|".join("---" for _ in GRAD_STATS) + "|"]
    for name, runs in groups.items():
        cells = [_cell([r["grad"][s] for r in runs], ".3g") for s in GRAD_STATS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def every_estimator_table(summaries: Sequence[dict]) -> str:
    """Every estimator the trackers measured (rows), averaged over all trajectories and
    evaluations: cost (f evaluations per example, milliseconds per estimate), then
    log-variance, bias next to its floor, SNR and cosine. Sorted by cost, then variance:
    rows with the same f evals are the fair comparison. Empty when each run measured only
    its own estimator."""
    if not _tracked_several(summaries):
        return ""
    names = sorted({m for s in summaries for m in s.get("tracked", {})})
    rows = []
    for m in names:
        per = [s["tracked"][m] for s in summaries if m in s.get("tracked", {})]
        avg = {k: float(np.nanmean([p[k] for p in per])) if any(
            math.isfinite(p[k]) for p in per) else math.nan for k in TRACKED_STATS}
        rows.append((m, avg, len(per)))
    rows.sort(key=lambda r: (r[1]["fevals"] if math.isfinite(r[1]["fevals"]) else 1e9,
                             r[1]["log_variance"]))
    fmt = lambda v, f: "-" if not math.isfinite(v) else format(v, f)
    lines = ["| estimator | f evals | ms / estimate | log-variance | bias | bias floor | "
             "bias / floor | SNR | cosine | trajectories |", "|---" * 10 + "|"]
    for m, a, n in rows:
        ratio = a["bias"] / a["bias_floor"] if a["bias_floor"] > 0 else math.nan
        lines.append(f"| {m} | {fmt(a['fevals'], '.0f')} | {fmt(a['ms_per_estimate'], '.2f')} "
                     f"| {fmt(a['log_variance'], '.2f')} | {fmt(a['bias'], '.3g')} | "
                     f"{fmt(a['bias_floor'], '.3g')} | {fmt(ratio, '.2f')} | "
                     f"{fmt(a['snr'], '.3g')} | {fmt(a['cosine'], '.3f')} | {n} |")
    return "\n".join(lines)


def _tracked_several(summaries: Sequence[dict]) -> bool:
    """Whether some run's tracker measured more than its own estimator (track="all")."""
    return max((len(s["along"]) for s in summaries), default=0) >= 2


def _measured(runs: Sequence[dict], groups: dict[str, list[dict]]) -> list[str]:
    """The estimators `runs` measured, in sweep order (then any others, sorted)."""
    found = {m for r in runs for m in r["along"]}
    return [m for m in groups if m in found] + sorted(found - set(groups))


def trajectory_table(summaries: Sequence[dict]) -> str:
    """Mean log-variance of every measured estimator (columns) along each run's trajectory
    (rows; means over seeds): empty when each run measured only its own estimator (the
    sweep's `track="own"`)."""
    groups = aggregate(summaries)
    if not _tracked_several(summaries):  # track="own": only a diagonal
        return ""
    measured = _measured(summaries, groups)
    lines = ["| trajectory / measured | " + " | ".join(measured) + " |",
             "|---|" + "|".join("---" for _ in measured) + "|"]
    for name, runs in groups.items():
        cells = []
        for m in measured:
            per_run = [float(np.mean([v for v in r["along"].get(m, {}).values()
                                      if math.isfinite(v)] or [np.nan])) for r in runs]
            cells.append(_cell(per_run, ".2f"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _style(name: str, order: Sequence[str]) -> dict[str, str]:
    """One color and line style per estimator, the same in every plot of a report: the 10
    default colors, then dashed, then dotted (sweeps often compare more than 10)."""
    i = order.index(name) if name in order else len(order)
    return {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[min(i // 10, 2)]}


def plot_trajectories(summaries: Sequence[dict], path: str) -> str | None:
    """One panel per trajectory (the run's estimator), one line per measured estimator:
    log-variance against step, means over seeds (REBAR's Fig. 2 layout)."""
    groups = aggregate(summaries)
    if not _tracked_several(summaries):
        return None
    fig, axes = figure(len(groups), 4.5, 3.4, sharey=True)
    for ax, (name, runs) in zip(axes, groups.items(), strict=True):
        for m in _measured(runs, groups):
            steps, ys = _mean_curve([r["along"].get(m, {}) for r in runs])
            ax.plot(steps, ys, label=m, linewidth=1.2, **_style(m, list(groups)))
        ax.set_title(f"on the {name} trajectory", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("log-variance of the encoder gradient")
    return save_figure(fig, path, legend=axes[0])


def _mean_curve(curves: Sequence[dict[int, float]]) -> tuple[list[int], list[float]]:
    steps = sorted(set().union(*curves)) if curves else []
    ys = [float(np.mean([c[s] for c in curves if s in c and math.isfinite(c[s])] or [np.nan]))
          for s in steps]
    return steps, ys


def plot_curves(summaries: Sequence[dict], path: str, titles: Sequence[str]) -> str:
    """One panel per curve title, one line per estimator (mean over seeds) against step."""
    groups = aggregate(summaries)
    fig, axes = figure(len(titles), 5)
    for ax, title in zip(axes, titles, strict=True):
        for name, runs in groups.items():
            steps, ys = _mean_curve([r["curves"][title] for r in runs])
            ax.plot(steps, ys, label=name, linewidth=1.2, marker="." if len(steps) < 30 else None,
                    **_style(name, list(groups)))
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    return save_figure(fig, path, legend=axes[0])


class Report(NamedTuple):
    """What `write_report` produced."""

    text: str  # report.md's contents
    table: str  # the main table (printed by the runner)
    gradient_table: str  # the tracker's statistics per estimator (printed too)
    summaries: list[dict]  # one per run
    plots: list[str]
    trajectory_table: str = ""  # every estimator along each trajectory (track="all")
    every_table: str = ""  # every measured estimator's statistics and cost


def write_report(workdir: str, runs: Sequence[Run], *, title: str = "",
                 notes: Sequence[str] = ()) -> Report:
    """Summarizes `runs` into `workdir/report.md`, `summary.json` and `workdir/plots/`."""
    summaries = [summarize_run(r) for r in runs]
    table, grads = markdown_table(summaries), gradient_table(summaries)
    titles = list(summaries[0]["curves"]) if summaries else []
    plots = [
        plot_curves(summaries, os.path.join(workdir, "plots", "elbo_vs_step.png"), titles[:2]),
        plot_curves(summaries, os.path.join(workdir, "plots", "log_variance_vs_step.png"),
                    titles[2:]),
    ]
    cross = trajectory_table(summaries)
    along = plot_trajectories(summaries, os.path.join(workdir, "plots",
                                                      "log_variance_on_each_trajectory.png"))
    plots += [along] if along else []
    every = every_estimator_table(summaries)
    every_parts = [
        "## Every estimator, measured at the same parameters",
        "Each estimator's encoder gradient measured by the tracker at the parameters of the "
        "trained runs (mean over their trajectories and evaluations), on the same fixed "
        "batch against the same reference. Cost first: rows with the same f evals (decoder "
        "evaluations per example for one estimate) are the fair comparison; ms / estimate "
        "is one estimate's wall time on the batch (compilation left out). bias / floor near "
        "1 is what an unbiased estimator shows; above it, the estimator is biased.",
        every] if every else []
    cross_parts = [
        "## Every estimator along each trajectory",
        "Mean log-variance of each estimator's encoder gradient (columns), measured at the "
        "parameters of each run (rows) on the same batch: the estimators compared at the "
        "same points, as Tucker et al. (2017, Fig. 2) do.", cross] if cross else []
    parts = [f"# {title or 'Discrete VAE: estimator comparison'}", FAIRNESS, table,
             "The train ELBO of a relaxed estimator (Gumbel-Softmax) is its relaxed objective; "
             "the test ELBO and NLL always score exact codes. Time per step is training alone "
             "(the median logging interval; evaluations are left out).",
             "## Encoder-gradient statistics (mean over each run's evaluations)",
             "Measured on a fixed training batch at the run's parameters "
             "(`ssl_gen.evals.gradient_variance`): bias against the reference gradient "
             "next to its noise floor, per-coordinate SNR, cosine to the reference. The reference "
             "is exact enumeration where the latent space has at most 4096 codes, otherwise "
             "the mean of two RLOO estimates with 1000 samples each "
             "(`gradient_variance.default_reference`): its own error, estimated from the two, "
             "adds to the bias and is in the floor (sqrt(V / R + reference_noise^2)), so an "
             "unbiased estimator's bias sits at its floor either way.",
             grads, *every_parts, *cross_parts, "## Plots",
             *[f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots],
             "## Runs", "\n".join(f"- {r.estimator}, seed {r.seed}: "
                                  f"`{os.path.relpath(r.workdir, workdir)}/`" for r in runs),
             *notes]
    text = "\n\n".join(parts) + "\n"
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump([{k: v for k, v in s.items() if k not in ("curves", "along")}
                   for s in summaries], f, indent=1)
    return Report(text, table, grads, summaries, plots, cross, every)
