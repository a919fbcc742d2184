"""The contract for every estimator: jit = no jit, vmap over keys, and inside a larger loss
the parameters f closes over get their gradient; vector outputs are per row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from tests.estimators import problems as P
from tests.estimators.tolerance import assert_mean_close

MA_STATE = est.MovingAverageState(jnp.array(0.05), jnp.array(1, jnp.int32))
RELAX = est.relax(hidden=4)

# name -> (estimator, state); every discrete estimator runs on the Bernoulli problem.
DISCRETE = {
    "score_function": (est.score_function(), None),
    "score_function[loo]": (est.score_function("loo"), None),
    "score_function[optimal]": (est.score_function("optimal"), None),
    "score_function[moving_average]": (est.score_function("moving_average"), MA_STATE),
    "exact": (est.exact(), None),
    "gumbel_softmax": (est.gumbel_softmax(0.5), None),
    "straight_through": (est.straight_through(), None),
    "straight_through_gumbel": (est.straight_through_gumbel(0.5), None),
    "reinmax": (est.reinmax(1.0), None),
    "arm": (est.arm(), None),
    "disarm": (est.disarm(), None),
    "indecater": (est.indecater(), None),
    "gumbel_rao": (est.gumbel_rao(0.5, 4), None),
    "gapped_straight_through": (est.gapped_straight_through(0.5), None),
    "rebar": (est.rebar(), None),
    "relax": (RELAX, RELAX.init()),
}
# Their gradient for f's own parameters is unbiased when f is evaluated at exact samples
# (all but Gumbel-Softmax, whose f sees relaxed samples).
EXACT_SAMPLES = [n for n in DISCRETE if n != "gumbel_softmax"]


def _loss(estimator, state):
    """A larger loss: E[(b.w - phi)^2] over b ~ Bernoulli(logits), plus a penalty on phi."""

    def loss(params, key):
        f = lambda b: jnp.square(b @ P.BERN_W - params["phi"])
        objective = est.expectation(f, P.bern_dist, estimator, 2)
        value = (
            objective(params["logits"], key)
            if state is None
            else objective(params["logits"], key, state)[0]
        )
        return value + 0.1 * jnp.square(params["phi"])

    return loss


PARAMS = {"logits": P.BERN_LOGITS, "phi": jnp.array(0.6)}


@pytest.mark.parametrize("name", ["score_function[loo]", "disarm", "straight_through_gumbel"])
def test_jit_and_no_jit_agree(name):
    """Eager dispatch is slow (each new op compiles), so three representative estimators
    run it: a score function, the antithetic one and a relaxed one."""
    grad = jax.grad(_loss(*DISCRETE[name]))
    key = P.key(0)
    eager, jitted = grad(PARAMS, key), jax.jit(grad)(PARAMS, key)
    # XLA may fuse and reorder float32 ops under jit: agreement to 1e-5 relative, not bitwise.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), eager, jitted)


def test_vmap_over_keys_equals_a_loop():
    """Row i of a vmap over (default, threefry) keys is the unbatched call on key i; row 1
    is checked, one extra graph per estimator keeps the compile small. (The statistical
    tests use "rbg" keys, whose vmap draws a batch from one key's stream: i.i.d. replicas,
    but not equal to a loop, see problems.key.)"""
    keys = jax.random.split(jax.random.key(1), 2)

    def run(params, keys):
        out = {}
        for name, (estimator, state) in DISCRETE.items():
            grad = jax.grad(_loss(estimator, state))
            out[name] = (jax.vmap(grad, in_axes=(None, 0))(params, keys), grad(params, keys[1]))
        return out

    for name, (batched, single) in jax.jit(run)(PARAMS, keys).items():
        close = lambda a, b, name=name: np.testing.assert_allclose(
            a[1], b, rtol=1e-5, atol=1e-6, err_msg=name
        )
        jax.tree.map(close, batched, single)


def test_larger_loss_gives_f_parameters_their_gradient():
    """Inside a larger loss, d/dphi of E[(b.w - phi)^2] + 0.1 phi^2 = 2 (phi - p.w) + 0.2 phi
    for every estimator that evaluates f at exact samples, and d/dlogits for the unbiased
    ones, against enumeration."""
    exact = lambda p: (
        P.brute_expectation(
            lambda b: jnp.square(b @ P.BERN_W - p["phi"]), est.Bernoulli(p["logits"])
        )
        + 0.1 * jnp.square(p["phi"])
    )
    truth = jax.jit(jax.grad(exact))(PARAMS)

    def run(params, key):
        names = EXACT_SAMPLES
        return {n: est.grad_samples(_loss(*DISCRETE[n]), params, key, 20_000) for n in names}

    for name, grads in jax.jit(run)(PARAMS, P.key(14)).items():
        assert_mean_close(grads["phi"], truth["phi"], what=f"{name} d/dphi")
        if DISCRETE[name][0].unbiased:
            assert_mean_close(grads["logits"], truth["logits"], what=f"{name} d/dlogits")


def test_gaussian_estimators_in_a_larger_loss():
    """E[(z - phi)^2], z ~ N(mu, sigma^2) = (mu - phi)^2 + sigma^2: all three gradients, for
    every estimator that takes a Normal."""
    params = {"loc": jnp.array(0.7), "scale": jnp.array(1.3), "phi": jnp.array(-0.4)}
    truth = {"loc": 2 * (0.7 + 0.4), "scale": 2 * 1.3, "phi": -2 * (0.7 + 0.4)}
    estimators = {
        "pathwise": est.pathwise(),
        "measure_valued": est.measure_valued(),
        "score_function[loo]": est.score_function("loo"),
        "score_function[delta]": est.score_function("delta"),
    }

    def run(p, key):
        out = {}
        for name, estimator in estimators.items():

            def loss(q, k, estimator=estimator):
                f = lambda z: jnp.square(z - q["phi"])
                return est.expectation(f, P.gauss_dist, estimator, 2)(q, k)

            out[name] = est.grad_samples(loss, p, key, 20_000)
        return out

    for name, grads in jax.jit(run)(params, P.key(15)).items():
        jax.tree.map(lambda g, t, name=name: assert_mean_close(g, t, what=name), grads, truth)


def test_vector_output_is_per_row_for_score_function():
    """f: (2, 2, 3) one-hots -> (2,): each row's gradient is its own (the per-output log-prob
    and optimal coefficients); checked against enumeration row by row."""
    logits = jnp.stack([P.CAT_LOGITS, P.CAT_LOGITS[::-1] * 0.5])  # (2 rows, 2 vars, 3)
    f = jax.vmap(P.cat_f)
    truth = jnp.stack([P.brute_grad(P.cat_f, P.cat_dist, row) for row in logits])
    specs = {b: (est.score_function(b), 3, None) for b in ("loo", "optimal")}
    for name, grads in P.many_replicas(specs, f, P.cat_dist, logits, 20_000, seed=16).items():
        assert_mean_close(grads, truth, what=f"per-row {name}")
