r"""The correlated-Gaussian MI benchmark of Poole et al. (2019), Fig. 2: every bound of
`ssl_gen.objectives.mi_bounds`, trained with each critic, against the true MI.

    python -m ssl_gen.runners.mi_bounds --config=experiments/mi_bounds.py \
        --workdir=runs/mi_bounds

The problem (Poole et al., Sec. 4; their colab's `sample_correlated_gaussian`):
x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) eps, eps ~ N(0, I_d), so each coordinate pair
(x_k, y_k) has correlation rho and I(X; Y) = -(d / 2) log(1 - rho^2). The true MI is
stepped through `config.mis` (2, 4, ..., 10 nats at d = 20), `steps_per_mi` Adam steps at
each; a critic (`ssl_gen.models.critics`, separable or joint) and, for TUBA / I_alpha, a
baseline MLP log a(y) are trained per bound by maximizing the bound on fresh batches, and
the bound's value on each training batch is that step's estimate (the paper's protocol).

Reported: per (critic, bound, true MI) the mean and standard deviation of the estimates
over the last `summary_fraction` of the stage (after the critic has caught up with the
new rho); the same bounds evaluated with the optimal critic in closed form (the log
density ratio; the ceiling a trained critic can reach, InfoNCE's below log N); plots of
every estimate along training and of the stage means against the true MI, with log N
drawn. The workdir gets report.md, rows.json, estimates.npz (every step's estimate) and
the PNGs. `run(config, workdir)` is importable (a notebook, the tests).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_gen.errors import UserError
from ssl_gen.models import critics
from ssl_gen.objectives import mi_bounds
from ssl_gen.reports import estimator_report as report
from ssl_gen.runners import print_tables

RUNNER = "mi_bounds"  # the `config.runner` this module runs


class RunnerError(UserError, ValueError):
    """A bad runner setting, said in one line."""


class Report(NamedTuple):
    tables: dict[str, str]  # title -> markdown
    rows: dict[str, list[dict]]  # section -> rows (plain JSON values)
    plots: list[str]  # PNG paths


# --- The correlated Gaussian, in closed form ------------------------------------------------
def mi_to_rho(mi: float, dim: int) -> float:
    """The per-coordinate correlation rho with -(dim / 2) log(1 - rho^2) = mi."""
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def rho_to_mi(rho: float, dim: int) -> float:
    return -0.5 * dim * math.log1p(-rho * rho)


def sample(key: jax.Array, rho, dim: int, n: int) -> tuple[jax.Array, jax.Array]:
    """n pairs (x, y), each (n, dim): x ~ N(0, I), y = rho x + sqrt(1 - rho^2) eps."""
    x, eps = jnp.split(jax.random.normal(key, (n, 2 * dim)), 2, axis=1)
    return x, rho * x + jnp.sqrt(1.0 - rho * rho) * eps


def log_conditional(x: jax.Array, y: jax.Array, rho) -> jax.Array:
    """(N, M): log p(y_j | x_i) = log N(y_j; rho x_i, (1 - rho^2) I)."""
    var = 1.0 - rho * rho
    sq = jnp.sum(jnp.square(y[None, :, :] - rho * x[:, None, :]), axis=-1)  # (N, M)
    return -0.5 * sq / var - 0.5 * x.shape[-1] * jnp.log(2 * jnp.pi * var)


def log_marginal(y: jax.Array) -> jax.Array:
    """(M,): log p(y_j) = log N(y_j; 0, I)."""
    return -0.5 * jnp.sum(jnp.square(y), axis=-1) - 0.5 * y.shape[-1] * jnp.log(2 * jnp.pi)


def log_density_ratio(x: jax.Array, y: jax.Array, rho) -> jax.Array:
    """(N, M): log r(x_i, y_j) = log p(y_j | x_i) - log p(y_j); E_p[log r] = I(X; Y)."""
    return log_conditional(x, y, rho) - log_marginal(y)[None, :]


def optimal_estimate(bound: str, x: jax.Array, y: jax.Array, rho, alpha=None) -> jax.Array:
    """The bound with the critic (and baseline) at which its population value is tightest:
    NWJ 1 + log r; TUBA and I_alpha log p(y | x) with a(y) = p(y) (so f - log a = log r);
    InfoNCE and JS log r (InfoNCE's optimum up to c(x); JS's discriminator optimum)."""
    if bound == "nwj":
        return mi_bounds.nwj(1.0 + log_density_ratio(x, y, rho))
    if bound == "tuba":
        return mi_bounds.tuba(log_conditional(x, y, rho), log_marginal(y))
    if bound == "interpolated":
        return mi_bounds.interpolated(log_conditional(x, y, rho), log_marginal(y), alpha)
    return mi_bounds.BOUNDS[bound](log_density_ratio(x, y, rho))


# --- Config checks ------------------------------------------------------------------------
def _int_at_least(config, key: str, low: int) -> None:
    v = config.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise RunnerError(f"config.{key}={v!r} must be an int >= {low}")


def critic_kinds(config) -> list[str]:
    return [k.strip() for k in str(config.critics).split(",") if k.strip()]


def check(config) -> None:
    """One-line `RunnerError`s for the runner settings, before anything compiles."""
    if config.get("runner") != RUNNER:
        raise RunnerError(f"config.runner is {config.get('runner')!r}, not {RUNNER!r}: "
                          "launch trainer configs with ssl_gen.train.main")
    for key, low in (("seed", 0), ("dim", 1), ("batch_size", 3), ("steps_per_mi", 1),
                     ("optimal_batches", 2)):
        _int_at_least(config, key, low)
    mis = tuple(config.mis)
    if not mis or not all(isinstance(m, int | float) and m > 0 for m in mis):
        raise RunnerError(f"config.mis={mis!r} must be true MIs in nats, each > 0")
    if not (isinstance(config.learning_rate, int | float) and config.learning_rate > 0):
        raise RunnerError(f"config.learning_rate={config.learning_rate!r} must be > 0")
    if not 0 < config.summary_fraction <= 1:
        raise RunnerError(f"config.summary_fraction={config.summary_fraction!r} must be in "
                          "(0, 1]")
    kinds = critic_kinds(config)
    unknown = [k for k in kinds if k not in critics.KINDS]
    if not kinds or unknown:
        raise RunnerError(f"config.critics={config.critics!r}: each must be one of "
                          f"{sorted(critics.KINDS)} (comma-separated)")
    if not config.bounds:
        raise RunnerError("config.bounds is empty: name at least one bound")
    for name, spec in config.bounds.items():
        bound = spec.get("bound")
        if bound not in mi_bounds.BOUNDS:
            raise RunnerError(f"config.bounds.{name}.bound={bound!r} is not one of "
                              f"{sorted(mi_bounds.BOUNDS)}")
        alpha = spec.get("alpha")
        if (bound == "interpolated") != (alpha is not None):
            raise RunnerError(f"config.bounds.{name}: alpha is the interpolated bound's "
                              f"(and it needs one), got bound={bound!r}, alpha={alpha!r}")
        if alpha is not None and not 0 <= alpha <= 1:
            raise RunnerError(f"config.bounds.{name}.alpha={alpha!r} must be in [0, 1]")


# --- Training -----------------------------------------------------------------------------
def _trainer(config, kind: str, spec):
    """(init(key) -> (params, opt_state), stage(params, opt_state, key, rho) -> (params,
    opt_state, estimates (steps_per_mi,))): one compiled program serves every stage."""
    bound, alpha = spec["bound"], spec.get("alpha")
    critic = critics.Model(kind=kind, **dict(config.critic))
    baseline = (critics.Baseline(**dict(config.baseline))
                if bound in mi_bounds.TAKES_BASELINE else None)
    optimizer = optax.adam(config.learning_rate)
    dim, n = config.dim, config.batch_size

    def init(key):
        k_critic, k_baseline = jax.random.split(key)
        probe = jnp.zeros((n, dim))
        params = {"critic": critic.init(k_critic, probe, probe)}
        if baseline is not None:
            params["baseline"] = baseline.init(k_baseline, probe)
        return params, optimizer.init(params)

    def estimate(params, x, y):
        scores, _ = critic.apply(params["critic"], x, y)  # (N, N)
        if bound == "interpolated":
            return mi_bounds.interpolated(scores, baseline.apply(params["baseline"], y), alpha)
        if bound == "tuba":
            return mi_bounds.tuba(scores, baseline.apply(params["baseline"], y))
        return mi_bounds.BOUNDS[bound](scores)

    def step(carry, key, rho):
        params, opt_state = carry
        x, y = sample(key, rho, dim, n)
        # Ascend the bound (for js: its value is NWJ's, its gradient the JS divergence's).
        value, grads = jax.value_and_grad(estimate)(params, x, y)
        grads = jax.tree.map(jnp.negative, grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    @jax.jit
    def stage(params, opt_state, key, rho):
        keys = jax.random.split(key, config.steps_per_mi)
        (params, opt_state), values = jax.lax.scan(
            lambda carry, k: step(carry, k, rho), (params, opt_state), keys)
        return params, opt_state, values

    return init, stage


def train(config, kind: str, spec, key: jax.Array) -> np.ndarray:
    """Every step's estimate, (len(mis), steps_per_mi), the critic carried across stages."""
    init, stage = _trainer(config, kind, spec)
    k_init, key = jax.random.split(key)
    params, opt_state = init(k_init)
    out = []
    for i, mi in enumerate(config.mis):
        rho = jnp.float32(mi_to_rho(mi, config.dim))
        params, opt_state, values = stage(params, opt_state, jax.random.fold_in(key, i), rho)
        out.append(np.asarray(values))
    return np.stack(out)


def _optimal_rows(config, key) -> list[dict]:
    rows = []
    n, dim = config.batch_size, config.dim
    for name, spec in config.bounds.items():
        bound, alpha = spec["bound"], spec.get("alpha")

        @jax.jit
        def batches(key, rho, bound=bound, alpha=alpha):
            def one(k):
                x, y = sample(k, rho, dim, n)
                return optimal_estimate(bound, x, y, rho, alpha)
            return jax.vmap(one)(jax.random.split(key, config.optimal_batches))

        for i, mi in enumerate(config.mis):
            values = np.asarray(batches(jax.random.fold_in(key, i),
                                        jnp.float32(mi_to_rho(mi, dim))), np.float64)
            finite = values[np.isfinite(values)]
            rows.append({"bound": name, "mi": float(mi),
                         "mean": float(finite.mean()) if finite.size else float("nan"),
                         "se": float(finite.std(ddof=1) / math.sqrt(finite.size))
                         if finite.size > 1 else float("nan"),
                         "nonfinite": int(values.size - finite.size)})
    return rows


# --- Report -------------------------------------------------------------------------------
def ceiling(spec, n: int) -> float | None:
    """The largest value a bound's estimate can take whatever the critic: log N for
    InfoNCE, 1 + log((N - 1) / alpha) for I_alpha (alpha > 0); None for the others."""
    if spec["bound"] == "infonce":
        return math.log(n)
    if spec["bound"] == "interpolated" and spec["alpha"] > 0:
        return 1.0 + math.log((n - 1) / spec["alpha"])
    return None


def _cell(mean: float, spread: float) -> str:
    return "-" if not math.isfinite(mean) else f"{mean:.2f} ({spread:.2f})"


def _tables(config, trained: list[dict], optimal: list[dict]) -> dict[str, str]:
    mis = [float(m) for m in config.mis]
    heads = [(f"mi_{i}", f"I = {m:g}") for i, m in enumerate(mis)]
    n = config.batch_size
    lines = []
    for kind in critic_kinds(config):
        for name in config.bounds:
            mine = {r["mi"]: r for r in trained if r["critic"] == kind and r["bound"] == name}
            row = {"critic": kind, "bound": name, "time": f"{mine[mis[0]]['time_s']:.0f}"}
            row.update({f"mi_{i}": _cell(mine[m]["mean"], mine[m]["sd"])
                        for i, m in enumerate(mis)})
            lines.append(row)
    estimates = report.markdown_table(
        lines, [("critic", "critic"), ("bound", "bound"), *heads, ("time", "train s")])
    opt_lines = []
    for name, spec in config.bounds.items():
        mine = {r["mi"]: r for r in optimal if r["bound"] == name}
        top = ceiling(spec, n)
        row = {"bound": name, "ceiling": "-" if top is None else f"{top:.2f}"}
        row.update({f"mi_{i}": _cell(mine[m]["mean"], mine[m]["se"]) for i, m in enumerate(mis)})
        opt_lines.append(row)
    best = report.markdown_table(opt_lines, [("bound", "bound"), *heads, ("ceiling", "ceiling")])
    frac = config.summary_fraction
    return {
        (f"Trained critics: mean (sd) of the per-step estimates over the last {frac:g} of "
         f"each stage, nats (N = {n}, d = {config.dim}, {config.steps_per_mi} steps per "
         f"MI; log N = {math.log(n):.2f})"): estimates,
        (f"Optimal critic in closed form: mean (standard error) over "
         f"{config.optimal_batches} batches of N = {n}"): best,
    }


def _ema(values: np.ndarray, span: int) -> np.ndarray:
    a, out, acc = 2.0 / (span + 1.0), np.empty_like(values), values[0]
    for i, v in enumerate(values):
        acc = acc + a * (v - acc) if np.isfinite(v) else acc
        out[i] = acc
    return out


def _plots(config, curves: dict, trained: list[dict], workdir: str) -> list[str]:
    from matplotlib.figure import Figure

    mis = np.asarray(config.mis, float)
    steps = config.steps_per_mi
    truth = np.repeat(mis, steps)
    log_n = math.log(config.batch_size)
    names, paths = list(config.bounds), []
    span = max(2, min(200, steps // 10))
    for kind in critic_kinds(config):
        cols = min(4, len(names))
        rows = math.ceil(len(names) / cols)
        fig = Figure(figsize=(3.2 * cols, 2.8 * rows))
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, name in zip(axes, names, strict=False):
            values = curves[kind][name].ravel()
            line = ax.plot(values, alpha=0.3, lw=0.6)[0]
            ax.plot(_ema(values, span), color=line.get_color(), lw=1.2, label="estimate")
            ax.plot(truth, "k", lw=1, label="true MI")
            ax.axhline(log_n, color="k", ls="--", lw=0.8, label="log N")
            top = ceiling(config.bounds[name], config.batch_size)
            if top is not None and config.bounds[name]["bound"] == "interpolated":
                ax.axhline(top, color="k", ls=":", lw=0.8, label="1 + log((N-1)/alpha)")
            ax.set_ylim(-1, mis.max() + 2)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        axes[0].set_ylabel("MI (nats)", fontsize=8)
        paths.append(report.save_figure(
            fig, os.path.join(workdir, f"estimates_{kind}.png"), legend=axes[0],
            title=f"{kind} critic: estimate per step (EMA span {span}) vs the true MI"))
    kinds = critic_kinds(config)
    fig, axes = report.figure(len(kinds), 4.5, 4.0)
    for ax, kind in zip(axes, kinds, strict=True):
        for name in names:
            mine = sorted((r for r in trained if r["critic"] == kind and r["bound"] == name),
                          key=lambda r: r["mi"])
            ax.errorbar([r["mi"] for r in mine], [r["mean"] for r in mine],
                        yerr=[r["sd"] for r in mine], marker="o", ms=3, capsize=2, label=name)
        ax.plot(mis, mis, "k", lw=1, label="true MI")
        ax.axhline(log_n, color="k", ls="--", lw=0.8, label=f"log N = {log_n:.2f}")
        ax.set_xlabel("true MI (nats)")
        ax.set_ylabel("estimate (nats)")
        ax.set_ylim(-1, mis.max() + 2)
        ax.set_title(f"{kind} critic", fontsize=9)
    paths.append(report.save_figure(fig, os.path.join(workdir, "estimate_vs_true.png"),
                                    legend=axes[0], title="stage means (sd) vs the true MI"))
    return paths


def run(config, workdir: str) -> Report:
    """Trains every (critic, bound); writes report.md, rows.json, estimates.npz and plots."""
    check(config)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise RunnerError(f"--workdir={workdir}: {e.strerror or e}") from None
    key = jax.random.key(config.seed)
    k_train, k_optimal = jax.random.split(key)
    keep = max(1, round(config.summary_fraction * config.steps_per_mi))
    trained, curves = [], {}
    for kind in critic_kinds(config):
        curves[kind] = {}
        for name, spec in config.bounds.items():
            start = time.perf_counter()
            # One key for every run: the same batches for each (critic, bound), a paired
            # comparison (and the same initial weights for a critic's shared layers).
            values = train(config, kind, spec, k_train)
            seconds = time.perf_counter() - start
            curves[kind][name] = values
            for mi, stage in zip(config.mis, values, strict=True):
                tail = stage[-keep:].astype(np.float64)
                tail = tail[np.isfinite(tail)]
                mean = float(tail.mean()) if tail.size else float("nan")
                trained.append({"critic": kind, "bound": name, "mi": float(mi), "mean": mean,
                                "sd": float(tail.std()) if tail.size else float("nan"),
                                "bias": mean - float(mi),
                                "nonfinite": int(keep - tail.size), "time_s": seconds})
    optimal = _optimal_rows(config, k_optimal)
    tables = _tables(config, trained, optimal)
    plots = _plots(config, curves, trained, workdir)
    text = "\n\n".join(f"## {title}\n\n{table}" for title, table in tables.items())
    with open(os.path.join(workdir, "report.md"), "w") as fh:
        fh.write(f"# MI bounds on correlated Gaussians (Poole et al. 2019, Fig. 2)\n\n{text}\n")
    rows = {"trained": trained, "optimal": optimal}
    with open(os.path.join(workdir, "rows.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    np.savez(os.path.join(workdir, "estimates.npz"),
             **{f"{kind}/{name}": v for kind, d in curves.items() for name, v in d.items()},
             mis=np.asarray(config.mis, np.float32))
    return Report(tables, rows, plots)


def launch(config, workdir: str, *, allow_config_change: bool = False) -> int:
    """The command line's run (`ssl_gen.main`): the benchmark, then its tables printed."""
    del allow_config_change  # nothing here resumes
    out = run(config, workdir)
    files = f"report.md, rows.json, estimates.npz and {len(out.plots)} plots"
    return print_tables(out.tables, f"{files} are in {workdir}")


if __name__ == "__main__":  # `python -m ssl_gen.runners.mi_bounds` is `python -m ssl_gen.main`
    from ssl_gen.main import run_cli

    run_cli()
