"""Distributions: normalization, sampling frequencies, entropy and KL against enumeration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ssl_gen import estimators as est
from tests.estimators import problems as P
from tests.estimators.tolerance import N_SE

BERN_LOGITS = jnp.array([-1.0, 0.3, 2.0])
CAT_LOGITS = jnp.array([[0.5, -1.0, 0.0, 1.5], [0.0, 0.0, 0.0, 0.0]])
# float32 sums of a handful of probabilities: rounding is ~1e-7 relative, 1e-5 is loose.
ATOL = 1e-5


def _joint_log_prob(dist, zs):
    """log p(z) of every joint value z in zs, summing all batch axes."""
    lp = jax.vmap(dist.log_prob)(zs)
    return lp.reshape(lp.shape[0], -1).sum(-1)


@pytest.mark.parametrize("dist", [est.Bernoulli(BERN_LOGITS), est.Categorical(CAT_LOGITS)])
def test_support_is_complete_and_normalized(dist):
    zs = dist.support()
    assert zs.shape[1:] == jax.eval_shape(dist.sample, jax.random.key(0)).shape
    flat = np.asarray(zs.reshape(zs.shape[0], -1))
    assert len({row.tobytes() for row in flat}) == zs.shape[0]  # no value twice
    total = jax.jit(lambda d: jnp.exp(_joint_log_prob(d, d.support())).sum())(dist)
    np.testing.assert_allclose(total, 1.0, atol=ATOL)


def test_bernoulli_samples_match_probs():
    dist = est.Bernoulli(BERN_LOGITS)
    n = 200_000
    z = dist.sample(P.key(1), (n,))
    assert z.shape == (n, 3) and z.dtype == BERN_LOGITS.dtype  # float64 under x64
    assert set(np.unique(np.asarray(z))) <= {0.0, 1.0}
    p = np.asarray(jax.nn.sigmoid(BERN_LOGITS))
    se = np.sqrt(p * (1 - p) / n)  # binomial standard error of a frequency
    assert np.all(np.abs(np.asarray(z).mean(0) - p) < N_SE * se)


def test_categorical_gumbel_max_samples_match_probs():
    dist = est.Categorical(CAT_LOGITS)
    n = 100_000
    z = np.asarray(dist.sample(P.key(2), (n,)))
    assert z.shape == (n, 2, 4)
    np.testing.assert_array_equal(z.sum(-1), 1.0)  # one-hot
    expected = n * np.asarray(jax.nn.softmax(CAT_LOGITS, -1))
    chi2 = ((z.sum(0) - expected) ** 2 / expected).sum(-1)  # Pearson statistic per variable
    # df = C - 1 = 3; the 1 - 1e-4 quantile (13.8) fails a wrong sampler by a wide margin.
    assert np.all(chi2 < stats.chi2.ppf(1 - 1e-4, df=3)), chi2


@pytest.mark.parametrize(
    "dist, other",
    [
        (est.Bernoulli(BERN_LOGITS), est.Bernoulli(jnp.array([0.5, -0.2, 0.0]))),
        (est.Categorical(CAT_LOGITS), est.Categorical(CAT_LOGITS[::-1] * 0.7)),
    ],
)
def test_entropy_and_kl_match_enumeration(dist, other):
    @jax.jit
    def both(dist, other):
        zs = dist.support()
        lp, lq = _joint_log_prob(dist, zs), _joint_log_prob(other, zs)
        p = jnp.exp(lp)
        ours = (dist.entropy().sum(), dist.kl(other).sum())
        return ours, (-(p * lp).sum(), (p * (lp - lq)).sum())

    ours, enumerated = both(dist, other)
    np.testing.assert_allclose(ours, enumerated, atol=ATOL)
    assert dist.entropy().shape == dist.batch_shape
    assert dist.kl(other).shape == dist.batch_shape


def test_normal_kl_matches_monte_carlo():
    p, q = est.Normal(jnp.array(0.3), jnp.array(0.8)), est.Normal(jnp.array(-0.5), jnp.array(1.4))
    z = p.sample(P.key(3), (200_000,))
    ratio = np.asarray(jax.jit(lambda z: p.log_prob(z) - q.log_prob(z))(z))
    se = ratio.std() / np.sqrt(z.shape[0])
    assert abs(ratio.mean() - p.kl(q)) < N_SE * se


@pytest.mark.parametrize("dist", [est.Bernoulli(BERN_LOGITS), est.Categorical(CAT_LOGITS)])
def test_discrete_samples_carry_no_gradient(dist):
    g = jax.jit(jax.grad(lambda d: d.sample(P.key(0), (4,)).sum()))(dist)
    np.testing.assert_array_equal(g.logits, 0.0)


def test_sample_shapes():
    key = jax.random.key(0)
    shape = lambda fn, *args: jax.eval_shape(fn, *args).shape  # shapes only: nothing compiles
    bern, cat = est.Bernoulli(jnp.zeros((2, 3))), est.Categorical(jnp.zeros((2, 3, 4)))
    assert shape(lambda k: bern.sample(k, (5,)), key) == (5, 2, 3)
    assert shape(lambda k: cat.sample(k, (5,)), key) == (5, 2, 3, 4)
    assert shape(cat.log_prob, jnp.zeros((5, 2, 3, 4))) == (5, 2, 3)  # no class axis
    assert est.Normal(jnp.zeros((3,)), jnp.ones(())).broadcast().scale.shape == (3,)


@pytest.mark.parametrize("dist", [est.Bernoulli(BERN_LOGITS), est.Categorical(CAT_LOGITS)])
def test_pathwise_on_discrete_is_a_clear_error(dist):
    objective = est.expectation(jnp.sum, lambda p: p, est.pathwise())
    with pytest.raises(ValueError, match="pathwise needs a reparameterizable"):
        objective(dist, jax.random.key(0))


def test_conditional_perturb_keeps_the_sample_and_its_gradient():
    """Perturbed logits drawn given a hard sample have that sample as their hard value, and
    a gradient in the logits (their distribution: Gumbel-Rao's test in test_relaxed)."""

    def run(key):
        out = []
        for dist in (est.Bernoulli(BERN_LOGITS), est.Categorical(CAT_LOGITS)):
            k1, k2 = jax.random.split(key)
            hard = dist.sample(k1, (1000,))
            cond = dist.conditional_perturb(k2, hard)
            total = lambda d, k=k2, h=hard: jnp.sum(d.conditional_perturb(k, h))
            grad = jax.grad(total)(dist)
            out.append((hard, dist.hard(cond), grad.logits))
        return out

    for hard, again, grad in jax.jit(run)(P.key(3)):
        np.testing.assert_array_equal(hard, again)
        assert np.all(np.isfinite(grad)) and np.any(grad != 0)
