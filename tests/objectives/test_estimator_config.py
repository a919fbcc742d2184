"""`make_estimator`'s errors: one line, the known names exactly the factories a config may
name (plus what the objective resolves itself), a did-you-mean for typos; and the sample
count's type error."""

import jax
import numpy as np
import pytest

from ssl_gen import estimators as est
from ssl_gen.objectives import discrete_elbo as de
from ssl_gen.objectives import make_estimator

INTERNALS = ("check_num_samples", "grad_samples", "expectation", "mean_over_samples",
             "multi_sample_bound", "standard_normal_like", "variance")


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    return message


def _known(message: str) -> list[str]:
    return message.split("nown: ", 1)[1].split(", ")


def test_factories_are_exactly_the_estimator_factories():
    for name in est.__all__:
        obj = getattr(est, name)
        if name in est.FACTORIES:
            assert isinstance(obj(), est.Estimator), name
            continue
        if not callable(obj):
            continue
        try:
            out = obj()
        except TypeError:
            continue  # needs arguments: not a factory with defaults
        assert not isinstance(out, est.Estimator), f"{name} is a factory: add it to FACTORIES"


@pytest.mark.parametrize("name", ["nope", *INTERNALS, "vimco"])
def test_unknown_name_lists_only_the_factories(name):
    message = _error(make_estimator, name)
    assert message.startswith(f"unknown estimator {name!r}; known: ")
    assert _known(message) == sorted(est.FACTORIES)  # no internals, no vimco for elbo


def test_typo_gets_a_did_you_mean():
    message = _error(make_estimator, {"name": "gumbel_sofmax", "temperature": 0.5})
    assert message.startswith("unknown estimator 'gumbel_sofmax'; did you mean 'gumbel_softmax'?")
    assert _known(message) == sorted(est.FACTORIES)
    message = _error(make_estimator, "straight_trough")
    assert "did you mean 'straight_through'?" in message


def test_discrete_elbo_lists_the_multi_sample_estimators_it_accepts():
    message = _error(de.resolve_estimator, "vimc0")
    assert message.startswith("unknown estimator 'vimc0'; did you mean 'vimco'?")
    assert _known(message) == sorted(set(est.FACTORIES) | set(de.MULTI_SAMPLE))
    schedule = dict(start=1.0, end=0.5, anneal_steps=10)
    assert "did you mean 'gumbel_softmax'?" in _error(de.resolve_estimator, "gumble_softmax",
                                                       schedule)


@pytest.mark.parametrize("bad", [2.0, True, "2", np.float32(2.0)])
def test_num_samples_must_be_an_int(bad):
    kind = type(bad).__name__
    message = _error(est.expectation, lambda z: z, est.Bernoulli, est.disarm(), bad)
    assert message == f"estimator 'disarm': num_samples must be an int, got {bad!r} ({kind})"
    message = _error(est.multi_sample_bound, lambda z: z, est.Bernoulli, bad)
    assert message == (f"multi_sample_bound(estimator='vimco'): num_samples must be an int, "
                       f"got {bad!r} ({kind})")


def test_numpy_ints_are_counts_and_too_few_says_so():
    objective = est.expectation(lambda z: z.sum(), est.Bernoulli, est.score_function("loo"),
                                np.int64(3))
    assert jax.eval_shape(objective, np.zeros(2, np.float32), jax.random.key(0)).shape == ()
    message = _error(est.expectation, lambda z: z, est.Bernoulli, est.score_function("loo"), 1)
    assert message == "estimator 'score_function[loo]' needs num_samples >= 2, got 1"
