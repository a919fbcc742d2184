"""`estimator_config.function_evaluations` (each Estimator's own cost), which discrete_elbo
reports as `fevals`, against the counts stated per estimator family: K per sample for the
one-evaluation estimators, 2K for the antithetic pairs of ARM/DisARM, 4K for REBAR and 7K for
RELAX as implemented, K (N C + 1) for IndeCateR, C^N for exact enumeration (the counted
evaluations are checked in tests/objectives/test_discrete_elbo.py)."""

import pytest

from ssl_gen.objectives import discrete_elbo as de
from ssl_gen.objectives.estimator_config import function_evaluations, make_estimator
from tests.objectives.test_discrete_elbo import MODELS, SPECS

PER_SAMPLE = {"arm": 2, "disarm": 2, "rebar": 4, "relax": 7}


def _stated(name: str, shape: tuple[int, ...], k: int) -> int:
    n, c = shape[0], (shape[1] if len(shape) == 2 else 2)
    if name == "exact":
        return c**n
    if name == "indecater":
        return k * (n * c + 1)
    return PER_SAMPLE.get(name, 1) * k


@pytest.mark.parametrize("name", sorted(SPECS))
def test_function_evaluations_equal_the_stated_counts(name):
    spec, _, latents = SPECS[name]
    e = make_estimator(spec)
    for latent in latents:
        shape = MODELS[latent].latent_shape
        for k in (e.min_samples, 4):
            assert function_evaluations(e, shape, k) == _stated(de.base_name(e), shape, k)
    assert de.function_evaluations is function_evaluations  # one place counts
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
