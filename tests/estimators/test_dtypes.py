"""Dtypes: every estimator factory keeps its distribution's precision, in both modes.

With `jax_enable_x64` off (the default) only float32 exists; with it on (`SSL_GEN_X64=1`,
see tests/test_x64.py) a float32 problem must trace to a float32 program (no float64
intermediate: the silent upcast would double memory and halve speed) and a float64 problem
must give a float64 value. A stateful estimator's new state has its initial state's dtypes
in both modes (a training loop carries it through `jit` and `scan`). All checks trace only
(`make_jaxpr`, `eval_shape`): nothing compiles, so the whole file takes a few seconds;
tests/test_x64.py runs it in x64 mode.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from ssl_gen.estimators import control_variates as cv
from tests.jaxpr_dtypes import wide_floats

X64 = jax.config.jax_enable_x64
FLOATS = [jnp.float32] + ([jnp.float64] if X64 else [])


# --- the problems: params of a dtype -> (dist_fn, f, params) ------------------------------


def normal(dtype):
    w = jnp.asarray([1.0, -2.0, 0.5], dtype)
    params = {"loc": jnp.asarray([0.3, -0.2, 1.0], dtype),
              "scale": jnp.asarray([1.0, 0.5, 0.8], dtype)}
    return (lambda p: est.Normal(p["loc"], p["scale"])), (lambda z: jnp.square(z @ w)), params


def bernoulli(dtype):
    w = jnp.asarray([1.0, -2.0, 0.5], dtype)
    f = lambda b: jnp.square(b @ w - 0.3)
    return est.Bernoulli, f, jnp.asarray([0.3, -0.8, 1.2], dtype)


def categorical(dtype):
    w = jnp.asarray([[1.0, -1.0, 0.5], [2.0, 0.0, -1.5]], dtype)
    f = lambda z: jnp.square(jnp.sum(z * w) - 0.4)
    return est.Categorical, f, jnp.asarray([[0.2, -0.5, 1.0], [0.0, 0.7, -0.3]], dtype)


N = 4
MASK = ~np.eye(N, dtype=bool)
MASK[0, 3] = MASK[3, 0] = False


def spanning_tree(dtype):
    a = np.random.default_rng(0).normal(size=(N, N))
    c = jnp.asarray(np.random.default_rng(1).normal(size=(N, N)), dtype)
    f = lambda tree: jnp.square(0.5 * jnp.sum((c + c.T) * tree) - 0.5)
    return (lambda t: est.SpanningTree(t, MASK)), f, jnp.asarray((a + a.T) / 2, dtype)


# Every estimator factory, on every distribution family it accepts (name, estimator, K).
CASES = [
    (normal, est.pathwise(), 2),
    (normal, est.measure_valued(), 2),
    (normal, est.score_function(), 2),
    (normal, est.score_function("loo"), 2),
    (normal, est.score_function("optimal"), 2),
    (normal, est.score_function("delta", order=1), 2),
    (normal, est.score_function("delta"), 2),
    (normal, est.score_function("moving_average"), 2),
    (normal, est.measure_valued(coupled=False), 2),
    (normal, est.with_control_variate(est.pathwise(), cv.delta(2)), 2),
    (normal, est.with_control_variate(est.measure_valued(), cv.delta(1), "estimated_loo"), 2),
    (normal, est.with_control_variate(est.score_function(), cv.delta(2), "estimated"), 3),
    (normal, est.with_control_variate(est.pathwise(), cv.moving_average(warmup=True,
                                                                        debias=False)), 2),
    (bernoulli, est.with_control_variate(est.disarm(), cv.leave_one_out()), 2),
    (bernoulli, est.score_function("optimal"), 2),
    (bernoulli, est.exact(), 1),
    (bernoulli, est.gumbel_softmax(0.5), 2),
    (bernoulli, est.straight_through(), 2),
    (bernoulli, est.straight_through_gumbel(0.5), 2),
    (bernoulli, est.reinmax(1.5), 2),
    (bernoulli, est.arm(), 2),
    (bernoulli, est.disarm(), 2),
    (bernoulli, est.indecater(), 2),
    (bernoulli, est.gumbel_rao(0.5, 3), 2),
    (bernoulli, est.gapped_straight_through(0.5), 2),
    (bernoulli, est.rebar(), 2),
    (bernoulli, est.relax(hidden=4), 2),
    (categorical, est.exact(), 1),
    (categorical, est.score_function("loo"), 2),
    (categorical, est.gumbel_softmax(0.5), 2),
    (categorical, est.straight_through(), 2),
    (categorical, est.reinmax(1.0), 2),
    (categorical, est.indecater(), 2),
    (categorical, est.gumbel_rao(0.5, 3), 2),
    (categorical, est.gapped_straight_through(0.5), 2),
    (categorical, est.rebar(), 2),
    (categorical, est.relax(hidden=4), 2),
    (spanning_tree, est.score_function("loo"), 2),
    (spanning_tree, est.exact(), 1),
    (spanning_tree, est.gumbel_softmax(0.5), 2),
    (spanning_tree, est.straight_through_gumbel(0.5), 2),
    (spanning_tree, est.straight_through(), 2),
]


def _loss(problem, estimator, num_samples, dtype):
    dist_fn, f, params = problem(dtype)
    objective = est.expectation(f, dist_fn, estimator, num_samples)

    def loss(p, key, state):
        if state is None:
            return jnp.sum(objective(p, key)), None
        value, new_state = objective(p, key, state)
        return jnp.sum(value), new_state

    return jax.value_and_grad(loss, has_aux=True), params


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    "problem,estimator,num_samples",
    CASES,
    ids=[f"{c[0].__name__}-{c[1].name}" for c in CASES],
)
def test_estimator_keeps_the_dtype(problem, estimator, num_samples, dtype):
    value_and_grad, params = _loss(problem, estimator, num_samples, dtype)
    state = estimator.init() if estimator.stateful else None
    key = jax.random.key(0)
    (value, new_state), grads = jax.eval_shape(value_and_grad, params, key, state)
    assert value.dtype == dtype, f"{estimator.name}: value is {value.dtype}, params {dtype}"
    assert all(g.dtype == dtype for g in jax.tree.leaves(grads))
    if state is not None:  # the state's dtypes (and structure) do not drift
        before = jax.tree.map(lambda x: (x.shape, x.dtype), state)
        after = jax.tree.map(lambda x: (x.shape, x.dtype), new_state)
        assert after == before, f"{estimator.name}: state {before} became {after}"
    if dtype == jnp.float32:
        wide = wide_floats(jax.make_jaxpr(value_and_grad)(params, key, state), dtype)
        assert not wide, f"{estimator.name} on float32 {problem.__name__} computes in {wide}"


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("estimator", ["vimco", "score_function"])
def test_multi_sample_bound_keeps_the_dtype(estimator, dtype):
    dist_fn, f, logits = bernoulli(dtype)
    objective = est.multi_sample_bound(lambda b: -f(b), dist_fn, 3, estimator=estimator)
    value_and_grad = jax.value_and_grad(lambda p, k: jnp.sum(objective(p, k)))
    key = jax.random.key(0)
    value, grad = jax.eval_shape(value_and_grad, logits, key)
    assert value.dtype == dtype and grad.dtype == dtype
    if dtype == jnp.float32:
        assert not wide_floats(jax.make_jaxpr(value_and_grad)(logits, key), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_distribution_methods_keep_the_dtype(dtype):
    key = jax.random.key(0)
    dists = [
        normal(dtype)[0](normal(dtype)[2]),
        est.Bernoulli(bernoulli(dtype)[2]),
        est.Categorical(categorical(dtype)[2]),
        spanning_tree(dtype)[0](spanning_tree(dtype)[2]),
    ]
    for d in dists:
        name = type(d).__name__

        def methods(d, key):
            z = d.sample(key, (2,))
            out = {"sample": z, "log_prob": d.log_prob(z), "entropy": d.entropy(),
                   "kl": d.kl(d), "mean": d.mean()}
            if d.is_discrete:
                perturbed = d.perturb(key, ())
                out.update(support=d.support(), perturb=perturbed, hard=d.hard(perturbed),
                           soft=d.soft(perturbed, 0.5))
                if not isinstance(d, est.SpanningTree):
                    out["conditional"] = d.conditional_perturb(key, d.hard(perturbed))
            else:
                out["rsample"] = d.rsample(key, (2,))
                out["prior"] = est.standard_normal_like(d).loc
            return out

        for what, x in jax.eval_shape(methods, d, key).items():
            assert x.dtype == dtype, f"{name}.{what} is {x.dtype}, params {dtype}"
        if dtype == jnp.float32:
            assert not wide_floats(jax.make_jaxpr(methods)(d, key), dtype), name
