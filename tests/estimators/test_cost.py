"""Every estimator states its cost: `Estimator.evaluations` equals the forward evaluations
of f counted by a host callback (`est.variance.count_evaluations`), for every factory on a
distribution it supports and for control-variated ones; and the uniform state protocol:
every estimator has `init`, stateless ones an empty state that the objective hands back."""

import jax
import jax.numpy as jnp
import pytest

from ssl_gen import estimators as est
from ssl_gen.estimators import control_variates as cv
from ssl_gen.estimators import variance

CV = est.with_control_variate
f = lambda z: jnp.sum(jnp.sin(z))  # one output row over every latent variable
normal = lambda p: est.Normal(p, jnp.ones(3))
# name -> (estimator, dist_fn, params, event_size E, classes C)
NORMAL = (normal, jnp.zeros(3), 3, 2)
BERN = (est.Bernoulli, jnp.zeros(3), 3, 2)
CAT = (est.Categorical, jnp.zeros((2, 3)), 2, 3)
CASES = {
    "pathwise": (est.pathwise(), *NORMAL),
    "measure_valued": (est.measure_valued(), *NORMAL),
    "measure_valued[uncoupled]": (est.measure_valued(coupled=False), *NORMAL),
    "score_function[delta2]": (est.score_function("delta"), *NORMAL),
    "pathwise[delta1,estimated]": (CV(est.pathwise(), cv.delta(1), "estimated"), *NORMAL),
    "measure_valued[delta2]": (CV(est.measure_valued(), cv.delta(2)), *NORMAL),
    "score_function[loo]": (est.score_function("loo"), *CAT),
    "score_function[optimal]": (est.score_function("optimal"), *BERN),
    "score_function[moving_average]": (est.score_function("moving_average"), *BERN),
    "exact": (est.exact(), *CAT),
    "arm": (est.arm(), *BERN),
    "disarm": (est.disarm(), *BERN),
    "indecater": (est.indecater(), *CAT),
    "gumbel_softmax": (est.gumbel_softmax(0.5), *CAT),
    "straight_through": (est.straight_through(), *BERN),
    "straight_through_gumbel": (est.straight_through_gumbel(0.5), *CAT),
    "reinmax": (est.reinmax(), *CAT),
    "gumbel_rao": (est.gumbel_rao(0.5, 2), *CAT),
    "gapped_straight_through": (est.gapped_straight_through(), *CAT),
    "rebar": (est.rebar(), *BERN),
    "relax": (est.relax(hidden=2), *CAT),
    "disarm[moving_average]": (CV(est.disarm(), cv.moving_average()), *BERN),
}


def test_every_factory_is_covered():
    names = {e.name.split("[", 1)[0] for e, *_ in CASES.values()}
    assert set(est.FACTORIES) <= names, set(est.FACTORIES) - names


@pytest.mark.slow  # one small compile per case (~20)
@pytest.mark.parametrize("name", sorted(CASES))
def test_cost_equals_counted_evaluations(name):
    estimator, dist_fn, params, event_size, classes = CASES[name]
    k = 3
    state = estimator.init() if estimator.stateful else None
    counted = variance.count_evaluations(f, dist_fn, estimator, params, k, state=state)
    assert estimator.evaluations(k, event_size, classes) == counted, name


def test_uniform_state_protocol():
    """init() for every estimator; a stateless objective called with its empty state
    returns (value, the same empty state); `stateful` is whether the state has leaves."""
    for estimator, *_ in CASES.values():
        state = estimator.init()
        assert estimator.stateful == bool(jax.tree.leaves(state)), estimator.name
    objective = est.expectation(f, normal, est.pathwise(), 2)
    value, state = jax.eval_shape(objective, jnp.zeros(3), jax.random.key(0), est.EmptyState())
    assert value.shape == () and state == est.EmptyState()
    both = CV(est.relax(hidden=2), cv.moving_average())
    assert isinstance(both.init(), cv.CombinedState) and both.stateful
    mystery = est.Estimator(name="mystery", estimate=lambda f, d, k, n: f(d.sample(k)))
    assert not mystery.stateful and mystery.init() == est.EmptyState()
    with pytest.raises(ValueError, match="no function-evaluation count for estimator 'mystery'"):
        mystery.evaluations(1)
