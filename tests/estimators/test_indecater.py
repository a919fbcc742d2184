"""indecater: exact for one variable, unbiased on the non-separable problems, requirement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from tests.estimators import problems as P
from tests.estimators.tolerance import assert_mean_close


def test_one_variable_is_exact_and_many_are_unbiased():
    """With one variable the local expectation is the whole expectation: every replica is
    the exact gradient (to float32 rounding, 1e-6). With several, the mean is."""
    one_cat = jnp.array([0.2, -0.5, 1.0])  # batch (), 3 classes
    one_cat_f = lambda z: jnp.square(z @ jnp.array([1.0, -1.0, 0.5]) - 0.4)
    cases = {
        "toy": (P.toy_f, P.toy_dist, jnp.array(P.TOY_THETA), True),
        "one categorical": (one_cat_f, P.cat_dist, one_cat, True),
        "bernoulli": (P.bern_f, P.bern_dist, P.BERN_LOGITS, False),
        "categorical": (P.cat_f, P.cat_dist, P.CAT_LOGITS, False),
    }

    def run(key):
        out = {}
        for name, (f, dist_fn, params, _) in cases.items():
            objective = est.expectation(f, dist_fn, est.indecater(), 2)
            out[name] = est.grad_samples(objective, params, key, 20_000)
        return out

    for name, grads in jax.jit(run)(P.key(20)).items():
        f, dist_fn, params, single = cases[name]
        truth = P.brute_grad(f, dist_fn, params)
        if single:
            np.testing.assert_allclose(grads, jnp.broadcast_to(truth, grads.shape), atol=1e-6)
        assert_mean_close(grads, truth, what=f"indecater/{name}")


def test_needs_a_discrete_factorized_distribution():
    objective = est.expectation(P.gauss_f, P.gauss_dist, est.indecater())
    with pytest.raises(ValueError, match="needs a Bernoulli or Categorical distribution"):
        jax.eval_shape(objective, P.GAUSS_PARAMS, jax.random.key(0))
