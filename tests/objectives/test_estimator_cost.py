"""`estimator_config.function_evaluations` (the Estimator's own cost) gives discrete_elbo's
per-example counts for every estimator it trains with."""

import pytest

from ssl_gen.objectives import discrete_elbo as de
from ssl_gen.objectives.estimator_config import function_evaluations, make_estimator
from tests.objectives.test_discrete_elbo import MODELS, SPECS


@pytest.mark.parametrize("name", sorted(SPECS))
def test_function_evaluations_from_the_estimator_equal_discrete_elbo(name):
    spec, _, latents = SPECS[name]
    e = make_estimator(spec)
    for latent in latents:
        shape = MODELS[latent].latent_shape
        for k in (e.min_samples, 4):
            assert function_evaluations(e, shape, k) == de.function_evaluations(e, shape, k)
    assert function_evaluations(make_estimator("exact"), (2, 10), 1) == 100
    assert function_evaluations(make_estimator("indecater"), (20, 10), 2) == 2 * 201
    with pytest.raises(ValueError, match="latent_shape must be"):
        function_evaluations(e, (2, 3, 4), 1)


def test_a_config_names_a_control_variate():
    e = make_estimator({"name": "disarm", "control_variate": "loo"})
    assert e.name == "disarm[loo]" and e.min_samples == 2
    e = make_estimator({"name": "score_function", "control_variate": {"name": "delta", "order": 1},
                        "coefficient": "estimated_loo"})
    assert e.name == "score_function[delta1,estimated_loo]"
    assert function_evaluations(e, (3,), 4) == 5  # K, plus one for the Taylor expansion
    with pytest.raises(ValueError, match="unknown control variate 'delta3'"):
        make_estimator({"name": "pathwise", "control_variate": "delta3"})
