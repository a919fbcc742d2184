r"""The classic gradient-estimator toy problems (config: experiments/estimator_toys.py).

Each toy returns `Report`: markdown tables (`ssl_gen.reports.estimator_report`), the rows
behind them (dicts) and the PNG plots it wrote. Statistics come from
`ssl_gen.estimators.variance`; programs are compiled once per estimator where a sweep
parameter can be traced (k of the Gaussian functions, t of the Bernoulli toy).

- `gaussian`: one-sample gradients in (mu, sigma) of E_{N(mu, sigma^2)}[f(x)] for
  f = (x - k)^2, cos(kx), exp(-kx^2) over a range of k, against the closed-form gradients
  (Mohamed et al. 2020, "Monte Carlo Gradient Estimation in Machine Learning", Sec. 3).
- `bernoulli`: theta = logit P(b = 1) trained by Adam on E[(b - t)^2] with each estimator,
  the loss and the log-variance of the gradient logged along the trajectory (Tucker et al.
  2017; Grathwohl et al. 2018; Yin & Zhou 2019), plus the table at the start.
- `categorical`: N categoricals with C classes and a smooth non-quadratic f; bias and
  variance against enumeration, temperature-taking estimators swept over temperatures.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_gen import estimators as est
from ssl_gen.estimators import variance
from ssl_gen.reports import estimator_report as report


class Report(NamedTuple):
    tables: dict[str, str]  # title -> markdown
    rows: dict[str, list[dict]]  # section -> rows (JSON-able after `jsonable`)
    plots: list[str]  # PNG paths


def make_estimator(spec: Mapping[str, Any], **overrides) -> tuple[est.Estimator, int]:
    """`{"name": factory, "num_samples": K, **kwargs}` -> (estimator, K); one-line errors."""
    kwargs = {**dict(spec), **overrides}
    name, num_samples = kwargs.pop("name"), kwargs.pop("num_samples", 1)
    factory = getattr(est, name) if name in est.FACTORIES else None
    if factory is None:
        near = difflib.get_close_matches(str(name), list(est.FACTORIES), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown estimator {name!r} in the toy config{hint} Known: "
                         f"{', '.join(sorted(est.FACTORIES))}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise ValueError(f"estimator {name!r}: num_samples must be an int, got "
                         f"{num_samples!r}")
    control, coefficient = kwargs.pop("control_variate", None), kwargs.pop("coefficient", 1.0)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    estimator = factory(**kwargs)
    if control is not None:  # a row with a control variate (est.control_variates.named)
        control = est.control_variates.named(control)
        estimator = est.with_control_variate(estimator, control, coefficient)
    return estimator, int(num_samples)


def _row(name: str, stats: Mapping[str, Any], **fields) -> dict:
    return {"name": name, **fields, **stats}


# --- Gaussian: E_{N(mu, sigma^2)}[f(x; k)] ------------------------------------------------
# name -> (f(x, k), closed-form expectation E(mu, sigma, k)).
GAUSSIAN_FUNCTIONS: dict[str, tuple[Callable, Callable]] = {
    "quadratic": (lambda x, k: jnp.square(x - k), lambda m, s, k: (m - k) ** 2 + s**2),
    "cos": (lambda x, k: jnp.cos(k * x),
            lambda m, s, k: jnp.cos(k * m) * jnp.exp(-0.5 * k**2 * s**2)),
    # E exp(-k x^2) = exp(-k mu^2 / (1 + 2 k sigma^2)) / sqrt(1 + 2 k sigma^2).
    "exp": (lambda x, k: jnp.exp(-k * jnp.square(x)),
            lambda m, s, k: jnp.exp(-k * m**2 / (1 + 2 * k * s**2)) / jnp.sqrt(1 + 2 * k * s**2)),
}


def _normal(params):
    return est.Normal(params["loc"], params["scale"])


def _switch(functions, index, *args):
    """functions[index](*args) with a traced index (vmap evaluates every branch)."""
    return jax.lax.switch(index, functions, *args)


def _sweep_replicas(estimator, num_samples, num_replicas):
    """Jitted (params, index, k, key) -> replicas for every (function index, k) pair at once:
    both are traced, so one compile serves the whole sweep. Leaves (P, R)."""
    functions = [fn for fn, _ in GAUSSIAN_FUNCTIONS.values()]

    def one(params, index, k, key):
        f = lambda x: _switch(functions, index, x, k)
        objective = est.expectation(f, _normal, estimator, num_samples)
        return est.grad_samples(objective, params, key, num_replicas)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, None)))


def gaussian(config, workdir: str, key: jax.Array) -> Report:
    c = config.gaussian
    params = {"loc": jnp.asarray(c.loc, jnp.float32), "scale": jnp.asarray(c.scale, jnp.float32)}
    names = list(GAUSSIAN_FUNCTIONS)
    pairs = [(names.index(f), float(k)) for f in c.ks for k in c.ks[f]]  # (function, k)
    index = jnp.asarray([i for i, _ in pairs], jnp.int32)
    ks = jnp.asarray([k for _, k in pairs], jnp.float32)
    closed = [e for _, e in GAUSSIAN_FUNCTIONS.values()]
    expectation_of = lambda p, i, k: _switch(closed, i, p["loc"], p["scale"], k)
    truths = jax.vmap(jax.grad(expectation_of), in_axes=(None, 0, 0))(params, index, ks)
    pick = lambda tree, j: jax.tree.map(lambda x: x[j], tree)
    sweep, reference = {f: [] for f in c.ks}, []
    for name, spec in c.estimators.items():
        estimator, num_samples = make_estimator(spec)
        samples = _sweep_replicas(estimator, num_samples, config.num_replicas)(
            params, index, ks, key)
        # Cost does not depend on f or k here: measured once, on the first function at k_ref.
        f_ref = functools.partial(GAUSSIAN_FUNCTIONS[names[pairs[0][0]]][0], k=c.reference_k)
        cost = dict(
            evals=variance.count_evaluations(f_ref, _normal, estimator, params, num_samples),
            time_s=variance.time_estimate(est.expectation(f_ref, _normal, estimator, num_samples),
                                          params, key, repeats=config.time_repeats))
        for j, (i, k) in enumerate(pairs):
            stats = variance.gradient_stats(pick(samples, j), pick(truths, j))
            var_loc, var_scale = stats["variance_per_coordinate"]  # ravel order: loc, scale
            row = _row(name, stats, function=names[i], k=k, num_samples=num_samples,
                       unbiased=estimator.unbiased, var_loc=var_loc, var_scale=var_scale)
            sweep[names[i]].append(row)
            if math.isclose(k, c.reference_k):
                reference.append(dict(row, **cost))
    extra = {"var_loc": "var d/dmu", "var_scale": "var d/dsigma"}
    tables, plots = {}, []
    if reference:
        tables[f"gaussian at k = {c.reference_k}"] = report.markdown_table(
            sorted(reference, key=lambda r: names.index(r["function"])),
            extra={"function": "f", **extra})
    sweep_columns = [("name", "estimator"), ("k", "k"), ("bias", "bias"),
                     ("bias_floor", "bias floor"), ("snr", "SNR"), ("cosine", "cosine")]
    for fname, rows in sweep.items():
        tables[f"gaussian {fname}: sweep over k"] = report.markdown_table(
            rows, columns=sweep_columns, extra=extra)
        plots.append(report.plot_sweep(
            rows, "k", os.path.join(workdir, f"gaussian_{fname}.png"),
            title=f"E[{fname}(x; k)], x ~ N({c.loc}, {c.scale}^2)",
            fields=("var_loc", "var_scale", "bias")))
    return Report(tables, {f"gaussian_{f}": rows for f, rows in sweep.items()}, plots)


# --- Bernoulli: min_theta E[(b - t)^2], b ~ Bernoulli(sigmoid(theta)) ------------------------
def _toy_exact(theta, t):
    """(loss, gradient): the exact objective p (1 - t)^2 + (1 - p) t^2 summed over units, and
    its gradient p (1 - p) (1 - 2t) per unit (numpy: no compile)."""
    p = 1 / (1 + np.exp(-np.asarray(theta, np.float64)))
    return float(np.sum(p * (1 - t) ** 2 + (1 - p) * t**2)), p * (1 - p) * (1 - 2 * t)


def _toy_f(b, t):
    return jnp.sum(jnp.square(b - t))


def _trainer(estimator, num_samples, c, num_replicas):
    """A jitted chunk: `num_replicas` gradient estimates at (theta, est_state), then
    `log_every` Adam steps from there. t is traced: one compile serves every target."""
    optimizer = optax.adam(c.learning_rate)

    @jax.jit
    def chunk(theta, opt_state, est_state, key, t):
        f = functools.partial(_toy_f, t=t)
        objective = est.expectation(f, est.Bernoulli, estimator, num_samples)

        def step(carry, k):
            theta, opt_state, est_state = carry
            if estimator.stateful:
                loss = lambda th: (lambda v, s: (jnp.sum(v), s))(*objective(th, k, est_state))
                grad, est_state = jax.grad(loss, has_aux=True)(theta)
            else:
                grad = jax.grad(lambda th: jnp.sum(objective(th, k)))(theta)
            updates, opt_state = optimizer.update(grad, opt_state)
            return (optax.apply_updates(theta, updates), opt_state, est_state), None

        key_var, key_steps = jax.random.split(key)
        samples = est.grad_samples(objective, theta, key_var, num_replicas, state=est_state)
        carry = (theta, opt_state, est_state)
        carry, _ = jax.lax.scan(step, carry, jax.random.split(key_steps, c.log_every))
        return carry, samples

    return optimizer, chunk


def _trajectory(estimator, trainer, theta0, key, t, num_chunks):
    """Rows of (step, loss gap, gradient stats) at steps 0, E, ..., num_chunks E."""
    optimizer, chunk = trainer
    carry = (theta0, optimizer.init(theta0), estimator.init() if estimator.stateful else None)
    points = []
    for k in jax.random.split(key, num_chunks + 1):
        new_carry, samples = chunk(*carry, k, t)  # samples at `carry`; the last steps unused
        loss, grad = _toy_exact(carry[0], t)
        stats = variance.gradient_stats(samples, grad)
        points.append(dict(stats, theta=float(carry[0][0]), gap=loss - t**2))
        carry = new_carry
    return points


def bernoulli(config, workdir: str, key: jax.Array) -> Report:
    c = config.bernoulli
    theta0 = jnp.zeros((1,), jnp.float32)  # one unit, p = 1/2 at the start
    num_chunks = c.steps // c.log_every
    tables, rows, plots = {}, {}, []
    specs = {name: make_estimator(spec) for name, spec in c.estimators.items()}
    trainers = {n: _trainer(e, k, c, c.variance_replicas) for n, (e, k) in specs.items()}
    costs = {}  # f-evaluations and time per estimate do not depend on t: measured once
    for name, (estimator, k) in specs.items():
        f = functools.partial(_toy_f, t=c.targets[0])
        objective = est.expectation(f, est.Bernoulli, estimator, k)
        state = estimator.init() if estimator.stateful else None
        costs[name] = dict(
            evals=variance.count_evaluations(f, est.Bernoulli, estimator, theta0, k, state),
            time_s=variance.time_estimate(objective, theta0, key, state, config.time_repeats))
    for t in c.targets:
        start, summary, curves = [], [], {}
        for name, (estimator, num_samples) in specs.items():
            points = _trajectory(estimator, trainers[name], theta0, key, t, num_chunks)
            start.append(_row(name, points[0], num_samples=num_samples,
                              unbiased=estimator.unbiased, **costs[name]))
            log_var = [math.log10(max(p["variance"], 1e-16)) for p in points]  # -16: zero
            curves[name] = {"step": [i * c.log_every for i in range(len(points))],
                            "loss - t^2": [p["gap"] for p in points], "log10 variance": log_var}
            summary.append(dict(name=name, num_samples=num_samples,
                                p=1 / (1 + math.exp(-points[-1]["theta"])),
                                gap=points[-1]["gap"], mean_log_var=float(np.mean(log_var)),
                                final_log_var=log_var[-1]))
        tables[f"bernoulli t = {t}: gradient at theta = 0"] = report.markdown_table(start)
        tables[f"bernoulli t = {t}: after {c.steps} Adam steps"] = report.markdown_table(
            summary, columns=[("name", "estimator"), ("num_samples", "K"),
                              ("p", "final p"), ("gap", "loss - t^2 (0 at p = 0)"),
                              ("mean_log_var", "mean log10 var"),
                              ("final_log_var", "final log10 var")])
        rows[f"bernoulli_{t}_start"], rows[f"bernoulli_{t}_trained"] = start, summary
        rows[f"bernoulli_{t}_curves"] = [dict(name=n, **cv) for n, cv in curves.items()]
        plots.append(report.plot_curves(
            curves, os.path.join(workdir, f"bernoulli_{t}.png"),
            title=f"E[(b - {t})^2]: Adam on theta, gradient variance along the way"))
    return Report(tables, rows, plots)


# --- Categorical: N variables, C classes, exact gradients --------------------------------
def categorical(config, workdir: str, key: jax.Array) -> Report:
    c = config.categorical
    rng = np.random.default_rng(config.seed)
    shape = (c.num_variables, c.num_classes)
    logits = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w, u = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(2))

    def f(z):  # (N, C) one-hots -> (): quadratic in one direction, oscillating in another
        return jnp.square(jnp.sum(z * w) - 0.5) + jnp.sin(2.0 * jnp.sum(z * u))

    estimators, extra = {}, {}
    for name, spec in c.estimators.items():
        if "temperature" in spec and spec["temperature"] is None:
            for tau in c.temperatures:
                if spec["name"] == "reinmax" and tau < 1:
                    continue  # defined for tau >= 1 only
                estimators[f"{name}@{tau}"] = make_estimator(spec, temperature=tau)
                extra[f"{name}@{tau}"] = dict(family=name, temperature=tau)
        else:
            estimators[name] = make_estimator(spec)
            extra[name] = dict(family=name, temperature=math.nan)
    stats = variance.compare(estimators, f, est.Categorical, logits, key,
                             num_replicas=config.num_replicas, truth="exact",
                             time_repeats=config.time_repeats)
    table_rows = [dict(report.as_dict(r), **extra[r.name]) for r in stats]
    title = f"categorical: {c.num_variables} variables x {c.num_classes} classes, exact gradient"
    tables = {title: report.markdown_table(table_rows, extra={"temperature": "tau"})}
    swept = [dict(r, name=r["family"]) for r in table_rows if not math.isnan(r["temperature"])]
    plots = [report.plot_rows(table_rows, os.path.join(workdir, "categorical.png"), title)]
    if swept:
        plots.append(report.plot_sweep(
            swept, "temperature", os.path.join(workdir, "categorical_temperature.png"),
            title="bias and variance against temperature", fields=("bias", "variance", "cosine")))
    return Report(tables, {"categorical": table_rows}, plots)


TOYS = {"gaussian": gaussian, "bernoulli": bernoulli, "categorical": categorical}


def jsonable(x: Any) -> Any:
    """Rows with numpy values -> plain Python for json (nan stays float nan)."""
    if isinstance(x, Mapping):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray | jax.Array):
        return np.asarray(x).tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x
