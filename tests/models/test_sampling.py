"""Sampling filters against NumPy references, and the autoregressive loop's alignment:
top-k keeps exactly k (ties to the lower index), top-p keeps the smallest most-probable set
reaching p, temperature -> 0 is the argmax, bad arguments are one-line ValueErrors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import sampling


def _kept(logits):
    return np.isfinite(np.asarray(logits))


def test_top_k_keeps_exactly_k_and_breaks_ties_by_lower_index():
    rng = np.random.default_rng(0)
    # Rounded to 1 decimal: many equal logits, so ties at the k-th value are common.
    logits = np.round(rng.normal(size=(50, 12)), 1).astype(np.float32)
    logits[0] = 1.0  # all tied
    for k in (1, 3, 7, 12, 20):
        kept = _kept(sampling.filter_logits(logits, top_k=k))
        assert (kept.sum(-1) == min(k, 12)).all()
        ref = np.argsort(-logits, axis=-1, kind="stable")[:, :k]  # ties: lower index first
        want = np.zeros_like(kept)
        np.put_along_axis(want, ref, True, axis=-1)
        np.testing.assert_array_equal(kept, want)
    np.testing.assert_array_equal(_kept(sampling.filter_logits(logits[:1], top_k=2))[0],
                                  [True, True] + [False] * 10)


def _top_p_reference(logits, p):
    """The smallest set of most probable tokens (stable order) whose probability >= p."""
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    keep = np.zeros(logits.shape, bool)
    for i, row in enumerate(probs):
        order = np.argsort(-row, kind="stable")
        cum = np.cumsum(row[order])
        m = int(np.searchsorted(cum, p - 1e-12)) + 1  # first prefix with cum >= p
        keep[i, order[:m]] = True
    return keep, probs


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99, 1.0])
def test_top_p_matches_numpy_reference(p):
    logits = np.random.default_rng(1).normal(size=(200, 10)).astype(np.float64) * 2
    keep, probs = _top_p_reference(logits, p)
    got = _kept(sampling.filter_logits(logits.astype(np.float32), top_p=p))
    np.testing.assert_array_equal(got, keep)
    mass = (probs * got).sum(-1)
    assert (mass >= p - 1e-6).all()  # reaches p ...
    smallest = np.where(got, probs, np.inf).min(-1)
    assert (mass - smallest < p).all() or p == 1.0  # ... and no smaller set does


def test_top_p_applies_after_temperature_and_top_k():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    # Top-k 2 renormalizes to (0.625, 0.375): p = 0.6 then needs only the first.
    np.testing.assert_array_equal(_kept(sampling.filter_logits(logits, top_k=2, top_p=0.6)),
                                  [[True, False, False, False]])
    # Without top-k, 0.5 < 0.6: two are needed.
    np.testing.assert_array_equal(_kept(sampling.filter_logits(logits, top_p=0.6)),
                                  [[True, True, False, False]])
    # Temperature 10 flattens (0.29, 0.28, 0.26, 0.18): 0.6 needs three.
    np.testing.assert_array_equal(
        _kept(sampling.filter_logits(logits, temperature=10.0, top_p=0.6)),
        [[True, True, True, False]])


def test_temperature_to_zero_approaches_argmax():
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(16, 8)), jnp.float32)
    argmax = np.asarray(jnp.argmax(logits, -1))
    keys = jax.random.split(jax.random.key(0), 200)
    draws = lambda t: np.asarray(jax.vmap(lambda k: sampling.draw(k, logits, temperature=t))(
        keys))  # (200, 16)
    agree = {t: (draws(t) == argmax).mean() for t in (1.0, 0.3, 0.05, 1e-3)}
    assert agree[1.0] < 0.7  # sampling is on: at T = 1 most draws are not the argmax
    assert agree[1.0] < agree[0.3] < agree[0.05] <= agree[1e-3]
    assert agree[1e-3] == 1.0
    np.testing.assert_array_equal(sampling.draw(keys[0], logits, temperature=0.0), argmax)


def test_sampling_is_on_by_default_and_matches_the_distribution():
    p = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    logits = jnp.broadcast_to(jnp.log(p), (20_000, 4))
    x = np.asarray(sampling.draw(jax.random.key(3), logits))
    freq = np.bincount(x, minlength=4) / len(x)
    # 20,000 draws: the standard error of each frequency is <= 0.0035; 4 sigma.
    np.testing.assert_allclose(freq, p, atol=0.014)
    x = np.asarray(sampling.draw(jax.random.key(3), logits, top_k=2))
    freq = np.bincount(x, minlength=4) / len(x)
    assert freq[:2].sum() == 0.0
    np.testing.assert_allclose(freq[2:], p[2:] / p[2:].sum(), atol=0.014)


@pytest.mark.parametrize("kwargs", [dict(top_p=0.0), dict(top_p=1.5), dict(top_p=-0.1),
                                    dict(top_k=0), dict(top_k=-2), dict(top_k=2.5),
                                    dict(temperature=-1.0), dict(top_k=True)])
def test_bad_sampling_argument_is_one_line(kwargs):
    with pytest.raises(ValueError) as e:
        sampling.filter_logits(jnp.zeros((2, 4)), **kwargs)
    assert "\n" not in str(e.value) and str(e.value).startswith("sampling:")
    with pytest.raises(ValueError):
        sampling.sample_tokens(lambda t: jnp.zeros((*t.shape, 4)), jax.random.key(0),
                               num_samples=2, length=3, **kwargs)


def test_sample_tokens_fills_left_to_right_from_aligned_logits():
    """A causal 'model' that puts all mass on (previous token + 1) mod V, and on 3 at t = 0:
    the loop must read position t's logits after drawing tokens < t."""
    v = 7

    def logits_fn(tokens):  # (N, L) -> (N, L, V), logits[:, t] from tokens[:, t - 1]
        prev = jnp.concatenate([jnp.full_like(tokens[:, :1], 2), tokens[:, :-1]], 1)
        return 50.0 * jax.nn.one_hot((prev + 1) % v, v)

    out = jax.jit(lambda k: sampling.sample_tokens(logits_fn, k, num_samples=3, length=9))(
        jax.random.key(0))
    np.testing.assert_array_equal(out, np.tile((np.arange(9) + 3) % v, (3, 1)))
