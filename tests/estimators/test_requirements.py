"""Every estimator factory on every distribution family: it traces, or it raises a one-line
ValueError that names the estimator (or its requirement) and the distribution. Trace only
(`jax.eval_shape`): nothing compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from ssl_gen.estimators import control_variates as cv

N = 4
MASK = ~np.eye(N, dtype=bool)
MASK[0, 3] = MASK[3, 0] = False
DISTRIBUTIONS = {  # name -> (dist_fn, params)
    "Normal": (lambda p: est.Normal(p, jnp.ones(3)), jnp.zeros(3)),
    "Bernoulli": (est.Bernoulli, jnp.zeros(3)),
    "Categorical": (est.Categorical, jnp.zeros((2, 3))),
    "SpanningTree": (lambda t: est.SpanningTree(t, MASK), jnp.zeros((N, N))),
}
# What each factory supports (with its defaults); anything else must be a one-line error.
SUPPORTS = {
    "pathwise": {"Normal"}, "measure_valued": {"Normal"},
    "score_function": set(DISTRIBUTIONS), "exact": {"Bernoulli", "Categorical", "SpanningTree"},
    "gumbel_softmax": {"Bernoulli", "Categorical", "SpanningTree"},
    "straight_through": {"Bernoulli", "Categorical", "SpanningTree"},
    "straight_through_gumbel": {"Bernoulli", "Categorical", "SpanningTree"},
    "reinmax": {"Bernoulli", "Categorical"}, "arm": {"Bernoulli"}, "disarm": {"Bernoulli"},
    "gumbel_rao": {"Bernoulli", "Categorical"},
    "gapped_straight_through": {"Bernoulli", "Categorical"},
    "indecater": {"Bernoulli", "Categorical"}, "rebar": {"Bernoulli", "Categorical"},
    "relax": {"Bernoulli", "Categorical"},
}
COMBINED = {  # control-variated estimators, by what they need
    "pathwise[delta2]": (est.with_control_variate(est.pathwise(), cv.delta()), {"Normal"}),
    "score_function[delta1,estimated]": (
        est.with_control_variate(est.score_function(), cv.delta(1), "estimated"), {"Normal"}),
    "disarm[loo]": (est.with_control_variate(est.disarm(), cv.leave_one_out()), {"Bernoulli"}),
}


def _trace(estimator, dist_name):
    dist_fn, params = DISTRIBUTIONS[dist_name]
    objective = est.expectation(lambda z: jnp.sum(jnp.square(z)), dist_fn, estimator, 3)
    state = estimator.init()
    loss = lambda p, k: jnp.sum(objective(p, k, state)[0])
    jax.eval_shape(jax.grad(loss), params, jax.random.key(0))


def test_every_factory_is_listed():
    assert set(SUPPORTS) == set(est.FACTORIES)


@pytest.mark.parametrize("name", sorted(SUPPORTS) + sorted(COMBINED))
def test_unsupported_distribution_is_a_one_line_value_error(name):
    if name in COMBINED:
        estimator, supported = COMBINED[name]
    else:
        estimator, supported = getattr(est, name)(), SUPPORTS[name]
    for dist_name in DISTRIBUTIONS:
        if dist_name in supported:
            _trace(estimator, dist_name)
            continue
        with pytest.raises(ValueError) as info:
            _trace(estimator, dist_name)
        message = str(info.value)
        assert "\n" not in message and dist_name in message, (name, dist_name, message)
