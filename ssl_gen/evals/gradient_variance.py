r"""Gradient statistics of several estimators at one point: variance, bias, SNR, cosine.

The REBAR-style tracker (Tucker et al. 2017, Fig. 2; Grathwohl et al. 2018; Dong et al.
2020): at the current parameters and on one fixed batch, each estimator draws R independent
gradient estimates g_1..g_R of the ELBO with respect to the encoder's parameters
(`est.grad_samples`), and they are compared with a reference gradient mu (exact enumeration
when the latent is small enough, otherwise a high-sample unbiased estimate). The statistics
are those of `est.variance.gradient_stats` (one definition in the codebase): bias ||g_bar -
mu|| next to its noise floor sqrt(V / R + e^2) (e, `reference_noise`: the error of a Monte
Carlo reference, estimated from two independent evaluations of it; 0 for exact
enumeration), the variance V = sum_d s_d^2 (the covariance's trace), the per-coordinate SNR
(Rainforth et al. 2018) and the mean cosine to mu; plus `log_variance` = log((1/D) sum_d
s_d^2), the mean per-parameter variance REBAR plots (tensorflow/models research/rebar:
`reduce_mean` of the per-parameter variances).

`gradient_statistics` is a pure function of (params, batch, key): the caller (a notebook,
the comparison sweep) chooses when to call it. `evaluate` is the trainer's eval
(`config.evals.gradient_variance`): every N steps, at the current parameters and on a fixed
training batch (the first `batch_size` examples of the training split, fixed binarization),
it measures the configured estimators and logs `gradvar/<estimator>/<statistic>`. The jitted
replica function is cached per (objective, model, estimator kwargs, R, path), so a run
compiles each estimator once, not once per evaluation. Stateful estimators are measured
from the state given in `states` (their initial state otherwise: a moving average of 0 is
plain REINFORCE, an untrained RELAX is REBAR).
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
import inspect
import math
import os
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen import estimators as est
from ssl_gen.evals.context import model_variables

# (params, batch, rng, **objective kwargs) -> (loss, aux); loss = -ELBO (discrete_elbo.loss_fn).
LossFn = Callable[..., tuple[jax.Array, dict]]


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _replace(tree: Mapping, path: tuple[str, ...], value: Any) -> dict:
    """A copy of nested dicts `tree` with the subtree at `path` replaced by `value`."""
    if not path:
        return value
    return {**tree, path[0]: _replace(tree[path[0]], path[1:], value)}


def gradient_replicas(loss_fn: LossFn, params: Any, batch: Mapping[str, jax.Array],
                      key: jax.Array, num_replicas: int, *, path: tuple[str, ...] = (
                          "params", "encoder"), state: Any = None, **objective: Any) -> jax.Array:
    """R independent estimates of grad_{params at path} ELBO, flattened: (R, D).

    Args:
      loss_fn: the objective, `(params, batch, rng, **objective) -> (-ELBO, aux)`.
      params: all model variables; only the subtree at `path` is differentiated.
      batch: the fixed batch. key: split into R replica keys (`est.grad_samples`).
      num_replicas: R. state: a stateful estimator's state (every replica starts from it).
      **objective: the objective's kwargs (estimator, num_samples, ...).

    Returns:
      (R, D): the leaves of the subtree, in `jax.tree.leaves` order, concatenated.
    """
    def elbo(sub, k):
        kwargs = dict(objective, estimator_state=state) if state is not None else objective
        return -loss_fn(_replace(params, path, sub), batch, k, **kwargs)[0]

    grads = est.grad_samples(elbo, _get(params, path), key, num_replicas)
    return jnp.concatenate([g.reshape(num_replicas, -1) for g in jax.tree.leaves(grads)], 1)


def summarize(grads: Any, truth: Any, reference_noise: float = 0.0) -> dict[str, float]:
    """The tracker's statistics from replicas (R, D) and a reference (D,), as floats.

    `reference_noise` is the expected error ||mu - E mu|| of a Monte Carlo reference (0 for
    exact enumeration): it adds in quadrature to the floor, sqrt(V / R + noise^2), the size
    the bias has without any bias in the estimator.
    """
    stats = est.variance.gradient_stats(grads, truth)
    mean_variance = float(np.mean(stats["variance_per_coordinate"]))
    return {
        "log_variance": float(np.log(mean_variance)) if mean_variance > 0 else -np.inf,
        "variance": stats["variance"],
        "bias": stats["bias"],
        "bias_floor": math.sqrt(stats["bias_floor"] ** 2 + reference_noise ** 2),
        "reference_noise": float(reference_noise),
        "snr": stats["snr"],
        "cosine": stats["cosine"],
    }


def reference_gradient(replicas: np.ndarray) -> tuple[np.ndarray, float]:
    """(mean, the expected error of the mean) of R >= 1 reference replicas (R, D).

    One replica is taken as exact (error 0: exact enumeration). With R >= 2 the error of
    the mean is sqrt(V / R), V = sum_d s_d^2 estimated from the replicas; summed over the D
    coordinates, even R = 2 estimates it well.
    """
    replicas = np.asarray(replicas, np.float64)
    if replicas.shape[0] < 2:
        return replicas[0], 0.0
    total = float(replicas.var(0, ddof=1).sum())
    return replicas.mean(0), math.sqrt(total / replicas.shape[0])


# Jitted replica functions, one per (objective, estimator kwargs, R, path); jax.jit adds
# one compilation per input shape. `TRACES` counts Python traces (a test keeps it flat).
_REPLICA_FNS: dict[Hashable, Callable] = {}
TRACES = {"count": 0}


def freeze(value: Any) -> Hashable:
    """A hashable, order-independent form of nested dicts/ConfigDicts/lists (a cache key)."""
    if hasattr(value, "to_dict"):  # ml_collections.ConfigDict
        value = value.to_dict()
    if isinstance(value, Mapping):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts from ConfigDicts (nested), so objectives see ordinary kwargs."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    return value


def _fn_key(loss_fn: Callable) -> Hashable:
    """An identity for a loss function that survives re-binding the same partial."""
    if isinstance(loss_fn, functools.partial):
        return (loss_fn.func, freeze(loss_fn.args), freeze(loss_fn.keywords))
    return loss_fn


def _declares_step(loss_fn: Callable) -> bool:
    try:
        return "step" in inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):
        return False


def replica_fn(loss_fn: LossFn, kwargs: Mapping[str, Any], num_replicas: int,
               path: tuple[str, ...] = ("params", "encoder")) -> Callable:
    """`(params, batch, key, state, step) -> (R, D)` replicas, jitted once and cached.

    `state` is a stateful estimator's state (or None); `step` (an int, traced: a new step
    does not recompile) reaches objectives that declare it (a temperature schedule), and is
    ignored otherwise.
    """
    key = (_fn_key(loss_fn), freeze(kwargs), num_replicas, tuple(path))
    fn = _REPLICA_FNS.get(key)
    if fn is None:
        plain = thaw(kwargs)
        with_step = _declares_step(loss_fn)

        def replicas(params, batch, rng, state, step):
            TRACES["count"] += 1  # at trace time only
            extra = {"step": step} if with_step else {}
            return gradient_replicas(loss_fn, params, batch, rng, num_replicas, path=path,
                                     state=state, **plain, **extra)

        fn = _REPLICA_FNS[key] = jax.jit(replicas, compiler_options=_compiler_options())
    return fn


def _compiler_options() -> dict[str, Any] | None:
    """On CPU, LLVM's optimization level 1 for the replica programs: XLA's default (level 2)
    takes ~4x as long to compile a tracked estimator (7 s against 28 s for RLOO on the
    20x10 categorical VAE, 2 loaded cores) for ~1.3x faster replicas, and a sweep that
    tracks every estimator compiles each once per run but calls it a few times only."""
    return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


_FEVALS_FNS: dict[Hashable, Callable] = {}
_CALLED: set[int] = set()  # replica functions called once (compiled): their calls are timed


def fevals_fn(loss_fn: LossFn, kwargs: Mapping[str, Any]) -> Callable:
    """`(params, batch, key, state, step) -> aux["fevals"]` of the objective with `kwargs`
    (NaN if it reports none): the f-evaluation cost of one estimate per example. A
    constant of the kwargs and the model: read off the traced program when it is a literal
    there (discrete_elbo's is), so nothing compiles; computed by a jitted call otherwise."""
    key = (_fn_key(loss_fn), freeze(kwargs))
    fn = _FEVALS_FNS.get(key)
    if fn is None:
        plain, with_step = thaw(kwargs), _declares_step(loss_fn)

        def fevals(params, batch, rng, state, step):
            extra = {"step": step} if with_step else {}
            if state is not None:
                extra["estimator_state"] = state
            aux = loss_fn(params, batch, rng, **plain, **extra)[1]
            return jnp.asarray(aux.get("fevals", jnp.nan), jnp.float32)

        jitted, literals = jax.jit(fevals, compiler_options=_compiler_options()), {}

        def fn(*args):
            shapes = tuple((np.shape(x), str(getattr(x, "dtype", type(x))))
                           for x in jax.tree.leaves(args))
            if shapes not in literals:  # one trace per input shapes
                out = jax.make_jaxpr(fevals)(*args).jaxpr.outvars[0]
                literals[shapes] = out.val if isinstance(out, jax.extend.core.Literal) else None
            value = literals[shapes]
            return jitted(*args) if value is None else value

        _FEVALS_FNS[key] = fn
    return fn


def gradient_statistics(
    loss_fn: LossFn,
    params: Any,
    batch: Mapping[str, jax.Array],
    key: jax.Array,
    *,
    estimators: Mapping[str, Mapping[str, Any]],
    reference: Mapping[str, Any],
    num_replicas: int = 100,
    path: tuple[str, ...] = ("params", "encoder"),
    states: Mapping[str, Any] | None = None,
    init_state: Callable[..., Any] | None = None,
    step: int | None = None,
    check_stop: Callable[[], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Variance, bias, SNR and cosine of each estimator's gradient at `params` on `batch`.

    Args:
      loss_fn: the objective with its model bound (`functools.partial(discrete_elbo.loss_fn,
        model=m)`), returning (-ELBO, aux).
      params, batch: the point and the fixed batch every estimator is measured on.
      key: one key: the reference and each estimator get their own (`fold_in` by index).
      estimators: name -> the objective's kwargs for that estimator (estimator, num_samples,
        temperature_schedule, ...), e.g. the presets of experiments/dvae_estimators.py.
      reference: the objective's kwargs for the reference gradient: `{"estimator":
        "exact"}` (one evaluation, no error), or a high-sample unbiased estimator, evaluated
        twice: their mean is the reference, their spread its error (`reference_noise`, in
        the floor; see `summarize`).
      num_replicas: R >= 2 per estimator.
      path: the parameter subtree whose gradient is measured (the encoder's).
      states: name -> state for stateful estimators; `init_state(**kwargs)` (e.g.
        `functools.partial(discrete_elbo.init_estimator_state, model=m)`) gives the others.
      step: the training step, for objectives that take one (a temperature schedule is
        measured at its current temperature); None: the schedule's start.
      check_stop: called before the reference and each estimator (`EvalContext.check_stop`:
        raises when the run was asked to stop, so a preemption waits for one estimator,
        or one per core while they compile).

    Returns:
      name -> {log_variance, variance, bias, bias_floor, reference_noise, snr, cosine,
      fevals (f evaluations per example of one estimate), ms_per_estimate (wall time of one
      estimate on the batch, from the replicas' call; absent on the call that compiles)}.
    """
    states = dict(states or {})
    check_stop = check_stop or (lambda: None)
    check_stop()
    step = None if step is None else jnp.asarray(step, jnp.int32)
    exact = _is_exact(reference)
    calls = {_REFERENCE: (replica_fn(loss_fn, reference, 1 if exact else 2, path),
                          (params, batch, jax.random.fold_in(key, 0), None, step))}
    for i, (name, kwargs) in enumerate(estimators.items(), start=1):
        state = states.get(name)
        if state is None and init_state is not None:
            state = init_state(**thaw(kwargs))
        calls[name] = (replica_fn(loss_fn, kwargs, num_replicas, path),
                       (params, batch, jax.random.fold_in(key, i), state, step))
    pool, first = _first_calls(calls, check_stop)
    try:
        results = {}
        for name, (fn, args) in calls.items():
            check_stop()
            if name in first:  # compiled and computed on a worker thread: not timed
                results[name] = (np.asarray(first[name].result()), None)
            else:
                timed, t0 = id(fn) in _CALLED, time.perf_counter()  # a first call compiles
                grads = np.asarray(fn(*args))
                results[name] = (grads, time.perf_counter() - t0 if timed else None)
            _CALLED.add(id(fn))
    finally:
        if pool is not None:  # a stop: queued compiles are dropped, running ones finish
            pool.shutdown(wait=True, cancel_futures=True)
    truth, noise = reference_gradient(results.pop(_REFERENCE)[0])
    out = {}
    for name, (grads, elapsed) in results.items():
        state, step_ = calls[name][1][3:]
        out[name] = summarize(grads, truth, noise)
        out[name]["fevals"] = float(fevals_fn(loss_fn, estimators[name])(
            params, batch, key, state, step_))
        if elapsed is not None:  # absent on a first call: it compiled
            out[name]["ms_per_estimate"] = 1e3 * elapsed / num_replicas
    return out


_REFERENCE = object()  # the reference's entry among a measurement's calls


def _first_calls(calls: Mapping[Any, tuple[Callable, tuple]], check_stop: Callable[[], None]
                 ) -> tuple[Any, dict[Any, Any]]:
    """(pool, name -> future): the first call of each replica function not called before,
    run on worker threads, one per core, in `calls` order; None, {} when at most one is.

    A first call compiles, and XLA compiles one program on one thread (releasing the GIL):
    the 14 presets and the reference of `make run`'s first evaluation compile side by side
    (148 s instead of 222 s on the 2 cores, shared, at load ~8; the statistics are the same
    bits). Later calls, which are timed, run one at a time on the caller's thread. Each
    worker calls `check_stop` before it starts a call.
    """
    new = [name for name, (fn, _) in calls.items() if id(fn) not in _CALLED]
    workers = min(len(new), os.cpu_count() or 1)
    if workers < 2:
        return None, {}

    def call(fn, args):
        check_stop()
        return fn(*args)

    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="gradvar")
    return pool, {name: pool.submit(call, *calls[name]) for name in new}


def _is_exact(reference: Mapping[str, Any]) -> bool:
    spec = reference.get("estimator")
    return (spec if isinstance(spec, str) else dict(spec or {}).get("name")) == "exact"


# Exact enumeration as the reference up to this many codes per example (C^N or 2^N).
MAX_EXACT_CODES = 4096
# Otherwise: RLOO with this many samples, evaluated twice (`gradient_statistics`: the mean
# is the reference, the spread its error, which goes into the bias floor).
REFERENCE_SAMPLES = 1000


def default_reference(model) -> dict[str, Any]:
    """Exact enumeration when the latent space is small, else a high-sample RLOO."""
    shape = tuple(model.latent_shape)
    codes = (shape[1] if len(shape) == 2 else 2) ** shape[0]
    if codes <= MAX_EXACT_CODES:
        return {"estimator": "exact", "num_samples": 1}
    return {"estimator": {"name": "score_function", "baseline": "loo"},
            "num_samples": REFERENCE_SAMPLES}


def fixed_batch(source: Any, batch_size: int, field: str = "image") -> dict[str, np.ndarray]:
    """The first `batch_size` examples of a random-access source, `field` only: the batch
    every evaluation of a run measures on (fixed binarization for digits_binarized)."""
    n = min(batch_size, len(source))
    return {field: np.stack([np.asarray(source[i][field]) for i in range(n)])}


def evaluate(state, ctx, *, estimators: Mapping[str, Mapping[str, Any]],
             objective: str = "discrete_elbo", objective_kwargs: Mapping[str, Any] | None = None,
             reference: Mapping[str, Any] | None = None, num_replicas: int = 64,
             batch_size: int = 64, prefix: str = "gradvar/") -> dict[str, float]:
    """The tracker as a trainer eval: each estimator's gradient statistics at `params`.

    Args:
      state: the train state (its model variables are evaluated). ctx: the trainer's
        `EvalContext`.
      estimators: name -> objective kwargs (estimator, num_samples, temperature_schedule),
        e.g. presets of experiments/dvae_estimators.py. Stateful estimators are measured
        from their initial state (the objective's `init_estimator_state`).
      objective: the module of `ssl_gen.objectives` whose `loss_fn` is differentiated
        (imported by name, as the trainer does, so evals do not depend on objectives).
      objective_kwargs: kwargs shared by every estimator (e.g. `beta`).
      reference: objective kwargs of the reference gradient; None: `default_reference`.
      num_replicas: R independent estimates per estimator.
      batch_size: size of the fixed training batch.
      prefix: metric names are `<prefix><estimator>/<statistic>`.

    Returns:
      `<prefix><name>/{log_variance, variance, bias, bias_floor, reference_noise, snr,
      cosine}` per estimator.
    """
    params = model_variables(state)
    module = importlib.import_module(f"ssl_gen.objectives.{objective}")
    shared = thaw(objective_kwargs or {})
    loss_fn = functools.partial(module.loss_fn, model=ctx.model, **shared)
    init = getattr(module, "init_estimator_state", None)
    init_state = (functools.partial(init, model=ctx.model, **shared) if init else None)
    batch = fixed_batch(ctx.train_source, batch_size)
    stats = gradient_statistics(
        loss_fn, params, batch, ctx.rng, estimators=dict(estimators),
        reference=reference if reference is not None else default_reference(ctx.model),
        num_replicas=num_replicas, init_state=init_state, step=ctx.step,
        check_stop=getattr(ctx, "check_stop", None))
    return {f"{prefix}{name}/{k}": v for name, row in stats.items() for k, v in row.items()
            if math.isfinite(v) or k == "snr"}
