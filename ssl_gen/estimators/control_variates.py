r"""Control variates as values, and the combinator that applies one to any estimator.

The rule (Mohamed et al. 2020, "Monte Carlo Gradient Estimation in Machine Learning", Sec. 7;
Glasserman 2004, Ch. 4.1). For a function h(z) whose expectation E_{p_theta}[h] is known in
closed form as a function of theta, and any coefficient beta,

    grad E[f] = grad E[f - beta h] + beta grad E[h],

so an estimator's gradient stays unbiased with any control variate whose expectation is
exact: apply the estimator to f - beta h and add beta grad E[h] back. That holds for every
estimator here, pathwise, score function, measure-valued, ARM, ... alike (their gradient
estimates are unbiased for every f), and for every beta that is independent of the sample
it multiplies. Which combinations are biased:

- an *estimated* coefficient computed from the same samples (`coefficient="estimated"`):
  beta_hat correlates with the samples it corrects, an O(1/K) bias (zero only in special
  cases, e.g. jointly Gaussian estimates; pathwise + delta1 on E[z^2] has mean
  2 sigma (1 - 2/K) in sigma, and at K = 4 on E[sum cos z] with delta2 the bias was 0.28
  against a noise floor of 0.005). `"estimated_loo"` computes sample k's coefficient from
  the other K - 1 samples and stays unbiased, at the price of a noisier coefficient (it
  can exceed the variance without a control variate at small K);
- a control variate whose "expectation" is not exact (a truncated series, a learned h
  without its own correction term);
- any combination with a biased estimator (straight-through, Gumbel-Softmax): the control
  variate then changes the bias as well, since E[g(h)] != grad E[h] for such estimators.

A baseline is the special case h = 1: E[h] = 1 has zero gradient, and the coefficient may
depend on anything independent of the sample it multiplies (a moving average of past f, the
mean of the other K - 1 samples). For the pathwise and measure-valued estimators a baseline
changes nothing (their gradient of a constant is 0); for the score function it is the
classical variance reduction (f - b) grad log p.

A control variate is an immutable `ControlVariate` (optax's pattern): `bind` gives h and
E[h] for one call, `init` / `update` its state (a NamedTuple; `EmptyState()` when it has
none). Instances: `constant` (a baseline), `moving_average` (Williams 1992; debiased like
Adam, or with the early-training decay heuristic), `leave_one_out` (RLOO, Kool et al. 2019)
and `delta` (the Taylor expansion of f at the mean, orders 1 and 2; Paisley, Blei & Jordan
2012). `with_control_variate(estimator, cv, coefficient)` returns an `Estimator`:

    pw = est.with_control_variate(est.pathwise(), cv.delta(order=2))            # fixed beta = 1
    sf = est.with_control_variate(est.score_function(), cv.delta(1), "estimated_loo")
    ma = est.with_control_variate(est.score_function(), cv.moving_average(0.9))  # stateful

Two ways of applying one. A fixed coefficient with h a function of z alone (constant,
moving_average, delta) evaluates the estimator once on f - beta h ("integrand" form): any
estimator, stateful ones included, any K, higher derivatives kept where the estimator keeps
them. A per-sample coefficient (leave_one_out) or an estimated one needs one estimate per
sample: from the estimator's `per_sample` (its K surrogates from the draws of `estimate`:
score function, pathwise, measure-valued), else by running it with one sample on each of K
keys (vmapped; the same key for f and h, so g_k(f) and g_k(h) see the same draw). Either
needs a stateless estimator (and `min_samples == 1` without `per_sample`). With the
estimated coefficient, per parameter coordinate i,

    g_k = grad S_k(f),  c_k = grad [S_k(h) - E[h]]   (E c_k = 0; S_k the estimator's surrogate)
    "estimated":      beta_i = sum_k (g_ki - g_i bar)(c_ki - c_i bar) / sum_k (c_ki - c_i bar)^2,
                      estimate = g bar - beta c bar   (the regression estimator)
    "estimated_loo":  beta_ki = sum_{j != k} (g_ji - g_i bar_{-k}) c_ji / sum_{j != k} c_ji^2,
                      estimate = mean_k (g_k - beta_k c_k)   (unbiased; E c = 0 is known)

(g bar_{-k} the mean over the other samples: centring g removes the noise that the
gradient's own mean adds to the uncentred sum_j g_j c_j, which at K = 8 made the
uncentred form 1.5-4x noisier than no control variate on the test rows)

the variance-minimizing beta_i = Cov(g_i, c_i) / Var(c_i) estimated from the samples; the
estimated forms give first derivatives only. With a useless control variate (c independent
of g) the regression estimator's variance is (K - 2) / (K - 3) times the plain one for
Gaussian estimates (Lavenberg & Welch 1981): the noise floor of estimating beta.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ssl_gen.estimators.core import (
    CostFn,
    EmptyState,
    Estimator,
    _has_state,
    empty_init,
    expand_trailing,
    sum_event_axes,
)
from ssl_gen.estimators.distributions import Normal

COEFFICIENTS = ("estimated", "estimated_loo")
_NO_COST: CostFn = lambda num_samples, event_size, num_classes: 0

# bind(f, dist, state, out) -> (h, mean): h maps one sample z to (*out) and carries no
# gradient to any parameter; mean(dist) -> (*out) is E_dist[h], exact and differentiable in
# dist's fields. `out` is f's output (a jax.ShapeDtypeStruct).
BindFn = Callable[..., tuple[Callable[[jax.Array], jax.Array], Callable[[Any], jax.Array]]]


class ControlVariate(NamedTuple):
    """A control variate h with its closed-form expectation and its state.

    Attributes:
      name: a short name for tables ("delta2", "loo", ...).
      bind: `(f, dist, state, out) -> (h, mean)`, see `BindFn`.
      init: `init() -> state` (`EmptyState()` when stateless).
      update: `(state, value) -> state`, folding in this call's estimate of E[f] (f's output
        shape, no gradient); None when stateless.
      scale: None, or `(values) -> coefficients`: a per-sample coefficient on h, (K, *out)
        from the K per-sample estimates of E[f], each independent of its own sample
        (leave-one-out); applied in the per-sample form.
      min_samples: the fewest samples it is defined for.
      cost: `(num_samples, event_size, num_classes) -> int`, the f-evaluations `bind` adds.
    """

    name: str
    bind: BindFn
    init: Callable[[], Any] = empty_init
    update: Callable[[Any, jax.Array], Any] | None = None
    scale: Callable[[jax.Array], jax.Array] | None = None
    min_samples: int = 1
    cost: CostFn = _NO_COST

    @property
    def stateful(self) -> bool:
        return self.init is not empty_init and _has_state(self.init)


class CombinedState(NamedTuple):
    """The state of a stateful estimator with a stateful control variate."""

    estimator: Any
    control_variate: Any


# --- instances ------------------------------------------------------------------------------


def _constant_h(value: Any, out: jax.ShapeDtypeStruct):
    b = jnp.broadcast_to(jnp.asarray(value).astype(out.dtype), out.shape)
    return (lambda z: b), (lambda dist: b)


def constant(value: float = 1.0) -> ControlVariate:
    """The baseline h = value (E[h] = value, zero gradient): with a coefficient beta it
    subtracts beta * value from f. With `coefficient="estimated_loo"` on the score function
    its beta estimates the optimal per-coordinate baseline E[f s_i^2] / E[s_i^2] (s the score;
    Greensmith et al. 2004) by regressing the centred per-sample gradients on the scores;
    `score_function(baseline="optimal")` estimates the same beta directly, with far less
    noise at small K."""
    value = float(value)
    return ControlVariate(name="constant" if value == 1.0 else f"constant[{value}]",
                          bind=lambda f, dist, state, out: _constant_h(value, out))


class MovingAverageState(NamedTuple):
    """State of the moving-average baseline: an exponential moving average of f.

    Attributes:
      mean: the (not debiased) moving average of the calls' mean f; a float32 scalar.
      count: how many updates it has seen (int32).
    """

    mean: jax.Array
    count: jax.Array


def moving_average_init() -> MovingAverageState:
    """The initial state: no update seen, average 0 (float32 in both x64 modes)."""
    return MovingAverageState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))


def moving_average_decay(state: MovingAverageState, decay: float, warmup: bool) -> jax.Array:
    """The decay of the next update: `decay`, or with `warmup` min(decay, (1 + t) / (10 + t))
    after t updates (tf.train.ExponentialMovingAverage's num_updates heuristic)."""
    d = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return d
    t = state.count.astype(jnp.float32)
    return jnp.minimum(d, (1.0 + t) / (10.0 + t))


def moving_average_value(state: MovingAverageState, decay: float, debias: bool = True) -> jax.Array:
    """The baseline of `state`: mean / (1 - decay**count) debiased (Adam's zero-debiasing,
    Kingma & Ba 2015; 0 before the first update), or the average itself."""
    if not debias:
        return state.mean
    correction = 1.0 - jnp.asarray(decay, jnp.float32) ** state.count
    return jnp.where(state.count > 0, state.mean / jnp.where(state.count > 0, correction, 1), 0)


def moving_average_update(
    state: MovingAverageState, value: jax.Array, decay: float, warmup: bool = False
) -> MovingAverageState:
    """mean <- d mean + (1 - d) mean(value), count <- count + 1 (no gradient)."""
    batch_mean = jnp.mean(jax.lax.stop_gradient(value)).astype(state.mean.dtype)
    d = moving_average_decay(state, decay, warmup)
    return MovingAverageState(d * state.mean + (1.0 - d) * batch_mean, state.count + 1)


def moving_average(decay: float = 0.9, *, debias: bool = True, warmup: bool = False
                   ) -> ControlVariate:
    r"""The moving-average baseline b = an exponential moving average of past E[f] estimates.

    Williams (1992); Mnih & Gregor (2014). h = b, taken from the state passed in
    (independent of this call's samples, so the estimate stays unbiased); `update` folds in
    this call's estimate of E[f], averaged over f's outputs. Stateful (`MovingAverageState`).

    Args:
      decay: d in [0, 1).
      debias: divide by 1 - d^t after t updates (the average starts at 0; Adam's correction).
      warmup: the early-training heuristic d_t = min(d, (1 + t) / (10 + t)) instead: the
        first updates forget the zero start quickly. An alternative to `debias` (whose
        1 - d^t assumes a constant d), so the two are exclusive.
    """
    decay = float(decay)
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"moving_average: decay must be in [0, 1), got {decay}")
    if debias and warmup:
        raise ValueError("moving_average: warmup replaces debias (1 - d^t assumes a constant "
                         "decay); pass debias=False with warmup=True")

    def bind(f, dist, state, out):
        return _constant_h(moving_average_value(state, decay, debias), out)

    name = "moving_average" + ("" if debias else "[warmup]" if warmup else "[biased]")
    return ControlVariate(
        name=name, bind=bind, init=moving_average_init,
        update=lambda state, value: moving_average_update(state, value, decay, warmup))


def leave_one_out_sum(x: jax.Array) -> jax.Array:
    """sum_{j != k} x_j for every k, along axis 0, without cancellation: (K, ...)."""
    k = x.shape[0]
    if k > 16:  # many samples (a 1,000-sample reference): one matmul, no (K, K, ...) mask
        return jnp.tensordot(1.0 - jnp.eye(k, dtype=x.dtype), x, axes=1)
    # Few samples: a masked sum that fuses into f's kernels; the tensordot with (1 - I) is
    # a separate small matmul on XLA:CPU (LOO at 1.1-2.6x the hand-written gradient).
    off = ~jnp.eye(k, dtype=bool).reshape((k, k) + (1,) * (x.ndim - 1))
    return jnp.sum(jnp.where(off, x[None], jnp.zeros((), x.dtype)), axis=1)


def leave_one_out() -> ControlVariate:
    """The leave-one-out baseline b_k = mean_{j != k} f(z_j) (RLOO; Kool et al. 2019, "Buy 4
    REINFORCE samples, get a baseline for free!"): h = 1 with the per-sample coefficient
    b_k, independent of sample k. Needs K >= 2."""
    return ControlVariate(
        name="loo", bind=lambda f, dist, state, out: _constant_h(1.0, out),
        scale=lambda values: leave_one_out_sum(values) / (values.shape[0] - 1), min_samples=2)


def _delta_bind(order: int):
    def bind(f, dist, state, out):
        if not isinstance(dist, Normal):
            raise ValueError(f"the delta control variate needs a Normal distribution, got "
                             f"{type(dist).__name__}")
        sg = jax.lax.stop_gradient
        mu_hat = sg(dist.broadcast().loc)  # the expansion point, held fixed: (*batch)
        out_ndim = len(out.shape)
        event_shape = mu_hat.shape[out_ndim:]
        num_events = math.prod(event_shape)
        rows = lambda x: jnp.reshape(x, x.shape[: x.ndim - len(event_shape)] + (num_events,))
        # Rows are independent (the shape rule): the gradient of sum f is every row's own.
        grad_fn = jax.grad(lambda z: (jnp.sum(y := f(z)), y), has_aux=True)
        if order == 1:
            slope, f_hat = grad_fn(mu_hat)
            hessian = None
        else:
            slope, hvp, f_hat = jax.linearize(grad_fn, mu_hat, has_aux=True)
            basis = jnp.eye(num_events, dtype=mu_hat.dtype).reshape((num_events,) + event_shape)
            columns = jax.vmap(lambda e: hvp(jnp.broadcast_to(e, mu_hat.shape)))(basis)
            columns = rows(columns)  # (E_i, *out, E_j): entry H_ji of each row
            hessian = sg(jnp.moveaxis(columns, 0, -1))  # (*out, E, E), symmetric
        f_hat, slope = sg(f_hat), sg(rows(slope))  # (*out), (*out, E)

        def taylor(d):  # d = z - mu_hat per row, (*out, E)
            h = f_hat + jnp.sum(slope * d, axis=-1)
            if hessian is not None:
                h = h + 0.5 * jnp.einsum("...i,...ij,...j->...", d, hessian, d)
            return h

        def h(z):
            return taylor(rows(z - mu_hat))

        def mean(d):  # E[h] = taylor(mu - mu_hat) + 1/2 sum_i H_ii sigma_i^2, exact
            full = d.broadcast()
            value = taylor(rows(full.loc - mu_hat))
            if hessian is not None:
                diag = jnp.diagonal(hessian, axis1=-2, axis2=-1)
                value = value + 0.5 * jnp.sum(diag * rows(jnp.square(full.scale)), axis=-1)
            return value

        return h, mean

    return bind


def delta(order: int = 2) -> ControlVariate:
    r"""The delta method: the Taylor expansion of f at the mean, for a `Normal`.

        h(z) = f(mu^) + grad f(mu^).(z - mu^) [+ 1/2 (z - mu^)' H(mu^) (z - mu^)  (order 2)]
        E[h] = h(mu) [+ 1/2 sum_i H_ii(mu^) sigma_i^2],

    with the expansion point mu^ = mu held fixed (its value, not its gradient), so E[h] is
    exact as a function of (mu, sigma). Paisley, Blei & Jordan (2012); Mohamed et al.
    (2020), Sec. 7.1. Needs f twice differentiable in z; with order 2 and f quadratic,
    f - h = 0 and every estimator applied to it has zero variance. Cost: one forward
    evaluation of f (with its gradient, linearized at order 2) and E Hessian-vector products
    of that linearization per estimate (E event coordinates per output row), then a
    polynomial per evaluation.

    Args:
      order: 1 or 2.
    """
    if order not in (1, 2):
        raise ValueError(f"delta: order must be 1 or 2, got {order!r}")
    return ControlVariate(name=f"delta{order}", bind=_delta_bind(order),
                          cost=lambda num_samples, event_size, num_classes: 1)


# --- the combinator ---------------------------------------------------------------------------


def _out_struct(f, dist, key) -> jax.ShapeDtypeStruct:
    """f's output shape and dtype on one sample (traced only)."""
    z = jax.eval_shape(lambda k: dist.sample(k, ()), key)
    return jax.eval_shape(f, z)


def _split(estimator: Estimator, cv: ControlVariate, state: Any) -> tuple[Any, Any]:
    if estimator.stateful and cv.stateful:
        return state.estimator, state.control_variate
    if estimator.stateful:
        return state, EmptyState()
    return EmptyState(), state if cv.stateful else EmptyState()


def _join(estimator: Estimator, cv: ControlVariate, est_state: Any, cv_state: Any) -> Any:
    if estimator.stateful and cv.stateful:
        return CombinedState(est_state, cv_state)
    return est_state if estimator.stateful else cv_state


def _integrand_estimate(estimator, cv, beta):
    """estimate(f - beta h) + beta E[h]: one call of the estimator."""

    def estimate(f, dist, key, num_samples, state=None):
        est_state, cv_state = _split(estimator, cv, state)
        h, mean = cv.bind(f, dist, cv_state, _out_struct(f, dist, key))
        f_cv = lambda z: f(z) - beta * h(z)
        if estimator.stateful:
            surrogate, est_state = estimator.estimate(f_cv, dist, key, num_samples, est_state)
        else:
            surrogate = estimator.estimate(f_cv, dist, key, num_samples)
        surrogate = surrogate + beta * mean(dist)
        if cv.stateful:
            cv_state = cv.update(cv_state, jax.lax.stop_gradient(surrogate))
        return surrogate, _join(estimator, cv, est_state, cv_state)

    return estimate


def _field_betas(coefficient, g, c):
    """The estimated coefficient of one field: g, c (K, *field) per-sample gradients of f
    and of the centred control; returns the estimate of the field's gradient (*field)."""
    if coefficient == "estimated":
        gc, cc = g - jnp.mean(g, 0), c - jnp.mean(c, 0)
        num, den = jnp.sum(gc * cc, 0), jnp.sum(cc * cc, 0)
        beta = jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0)
        return jnp.mean(g, 0) - beta * jnp.mean(c, 0)
    k = g.shape[0]
    g_rest = leave_one_out_sum(g) / (k - 1)  # the mean of g without sample k
    num = leave_one_out_sum(g * c) - g_rest * leave_one_out_sum(c)  # sum_{j!=k} (g_j - g_rest) c_j
    den = leave_one_out_sum(c * c)  # (K, *field)
    beta = jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0)
    return jnp.mean(g - beta * c, 0)


def _per_sample_surrogates(estimator, key, num_samples):
    """(fn, dist) -> the K per-sample surrogates (K, *out): the estimator's own `per_sample`
    (the draws of `estimate`), or one single-sample estimate per split key (vmapped; the
    same key for every fn, so f and h see the same draws)."""
    if estimator.per_sample is not None:
        return lambda fn, dist: estimator.per_sample(fn, dist, key, num_samples)
    keys = jax.random.split(key, num_samples)
    return lambda fn, dist: jax.vmap(lambda k: estimator.estimate(fn, dist, k, 1))(keys)


def _per_sample_gradients(surrogates, fixed):
    """(values (K, *out), gradients): row k of the gradients is that of sample k's
    surrogate summed over f's outputs (each output reads its own coordinates), a
    distribution of (K, *field) arrays; K backward passes in one batch."""
    values, vjp = jax.vjp(surrogates, fixed)
    k = values.shape[0]
    eye = jnp.eye(k, dtype=values.dtype).reshape((k, k) + (1,) * (values.ndim - 1))
    cotangents = jnp.broadcast_to(eye, (k,) + values.shape)  # one-hot over the samples
    return values, jax.vmap(lambda ct: vjp(ct)[0])(cotangents)


def _per_sample_estimate(estimator, cv, coefficient, name, min_samples):
    """One single-sample estimate per key; a per-sample or an estimated coefficient."""

    def estimate(f, dist, key, num_samples, state=None):
        if num_samples < min_samples:
            raise ValueError(f"{name} needs num_samples >= {min_samples}, got {num_samples}")
        cv_state = state if cv.stateful else EmptyState()
        h, mean = cv.bind(f, dist, cv_state, _out_struct(f, dist, key))
        sg = jax.lax.stop_gradient
        per_sample = _per_sample_surrogates(estimator, key, num_samples)
        if not isinstance(coefficient, str):
            s_f, s_h = per_sample(f, dist), per_sample(h, dist)  # (K, *out), differentiable
            b = coefficient * (1.0 if cv.scale is None else sg(cv.scale(sg(s_f))))
            surrogate = jnp.mean(s_f - b * (s_h - mean(dist)), axis=0)
        else:
            full = dist.broadcast()
            fixed = sg(full)
            s_f, g = _per_sample_gradients(lambda d: per_sample(f, d), fixed)
            _, c = _per_sample_gradients(lambda d: per_sample(h, d) - mean(d), fixed)
            if cv.scale is not None:
                b = sg(cv.scale(sg(s_f)))
                c = jax.tree.map(lambda x: x * expand_trailing(b, x.ndim), c)
            grads = jax.tree.map(lambda gi, ci: sg(_field_betas(coefficient, gi, ci)), g, c)
            out_ndim = s_f.ndim - 1
            linear = jax.tree.map(  # value 0, gradient `grads` in every field
                lambda x, gx: sum_event_axes(gx * (x - sg(x)), out_ndim), full, grads)
            surrogate = jnp.mean(s_f, axis=0) + sum(jax.tree.leaves(linear))
        if cv.stateful:
            return surrogate, cv.update(cv_state, sg(surrogate))
        return surrogate, EmptyState()

    return estimate


def _coefficient_name(coefficient) -> str:
    if isinstance(coefficient, str):
        return f",{coefficient}"
    return "" if coefficient == 1.0 else f"*{coefficient}"


def with_control_variate(
    estimator: Estimator, control_variate: ControlVariate, coefficient: float | str = 1.0
) -> Estimator:
    r"""`estimator` with `control_variate` subtracted from f and its expectation added back.

        grad E[f] ~= g(f - beta h) + beta grad E[h]       (see the module docstring)

    Args:
      estimator: any `Estimator` (a fixed coefficient); a stateless one with
        `min_samples == 1` for a per-sample (leave_one_out) or an estimated coefficient.
      control_variate: a `ControlVariate` (`constant`, `moving_average`, `leave_one_out`,
        `delta`).
      coefficient: a number beta (1 by default); `"estimated"`, the variance-minimizing
        beta per parameter coordinate estimated from the same K samples (biased, O(1/K),
        K >= 3); or `"estimated_loo"`, sample k's beta from the other K - 1 (unbiased,
        K >= 2).

    Returns:
      An `Estimator` named `"<estimator>[<cv>]"`, unbiased when the estimator is and the
      coefficient is not `"estimated"`, stateful when either part is (`CombinedState` holds
      both). Its value is the control-variated estimate of E[f] (the plain mean of f with an
      estimated coefficient); its `cost` adds the control variate's to the estimator's.
    """
    if not isinstance(estimator, Estimator):
        raise TypeError(f"with_control_variate: estimator must be an Estimator, got "
                        f"{type(estimator).__name__}")
    if not isinstance(control_variate, ControlVariate):
        raise TypeError(f"with_control_variate: control_variate must be a ControlVariate, got "
                        f"{type(control_variate).__name__}")
    cv = control_variate
    if isinstance(coefficient, str):
        if coefficient not in COEFFICIENTS:
            raise ValueError(f"with_control_variate: coefficient must be a number or one of "
                             f"{COEFFICIENTS}, got {coefficient!r}")
    else:
        try:
            coefficient = float(coefficient)
        except (TypeError, ValueError):
            raise ValueError(f"with_control_variate: coefficient must be a number or one of "
                             f"{COEFFICIENTS}, got {coefficient!r}") from None
    name = f"{estimator.name}[{cv.name}{_coefficient_name(coefficient)}]"
    per_sample = isinstance(coefficient, str) or cv.scale is not None
    cost_of = estimator.cost

    if not per_sample:
        cost = None if cost_of is None else (
            lambda k, e, c: cost_of(k, e, c) + cv.cost(k, e, c))
        stateful = estimator.stateful or cv.stateful
        estimate = _integrand_estimate(estimator, cv, coefficient)
        if not stateful:
            estimate = (lambda inner: lambda f, d, key, k: inner(f, d, key, k)[0])(estimate)
        if estimator.stateful and cv.stateful:
            init = lambda: CombinedState(estimator.init(), cv.init())
        else:
            init = estimator.init if estimator.stateful else cv.init
        return Estimator(name=name, estimate=estimate, unbiased=estimator.unbiased,
                         min_samples=max(estimator.min_samples, cv.min_samples),
                         init=init, cost=cost)

    if estimator.stateful or (estimator.per_sample is None and estimator.min_samples > 1):
        raise ValueError(
            f"with_control_variate: {name} needs one estimate per sample (a per-sample or an "
            f"estimated coefficient), so a stateless estimator with min_samples 1; "
            f"{estimator.name!r} is not one")
    minimum = max(cv.min_samples, {"estimated": 3, "estimated_loo": 2}.get(coefficient, 1))
    if cost_of is None:
        cost = None
    elif estimator.per_sample is not None:
        cost = lambda k, e, c: cost_of(k, e, c) + cv.cost(k, e, c)
    else:
        cost = lambda k, e, c: k * cost_of(1, e, c) + cv.cost(k, e, c)
    estimate = _per_sample_estimate(estimator, cv, coefficient, name, minimum)
    if not cv.stateful:
        estimate = (lambda inner: lambda f, d, key, k: inner(f, d, key, k)[0])(estimate)
    return Estimator(name=name, estimate=estimate,
                     unbiased=estimator.unbiased and coefficient != "estimated",
                     min_samples=minimum, init=cv.init, cost=cost)


NAMED = ("constant", "moving_average", "loo", "delta1", "delta2")


def named(spec: Any) -> ControlVariate:
    """A control variate from a config value: a `ControlVariate` (as is), one of `NAMED`, or
    `{"name": "moving_average", "decay": 0.99}` / `{"name": "delta", "order": 1}` with the
    factory's keyword arguments; anything else is a one-line ValueError."""
    if isinstance(spec, ControlVariate):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif hasattr(spec, "get") and "name" in spec:
        name, kwargs = spec["name"], {k: v for k, v in dict(spec).items() if k != "name"}
    else:
        raise ValueError(f"control variate must be a name or a dict with 'name', got {spec!r}")
    factories = {"constant": constant, "moving_average": moving_average,
                 "loo": leave_one_out, "delta": delta,
                 "delta1": lambda: delta(1), "delta2": lambda: delta(2)}
    if name not in factories:
        raise ValueError(f"unknown control variate {name!r}; known: {', '.join(NAMED)}, delta")
    try:
        return factories[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"control variate {name!r}: bad arguments {kwargs}: {e}") from None
