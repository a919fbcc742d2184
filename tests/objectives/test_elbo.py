"""The ELBO and the IWAE bound against their defining properties."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen import estimators as est
from ssl_gen.evals import iwae
from ssl_gen.models import vae
from ssl_gen.objectives import elbo, make_estimator


@pytest.fixture(scope="module")
def setup():
    m = vae.Model(hidden=(16,), latent_dim=3)
    x = np.random.default_rng(0).integers(0, 17, size=(6, 8, 8, 1)).astype(np.uint8)
    params = m.init({"params": jax.random.key(0)}, x)
    return m, x, params


def test_analytic_kl_matches_monte_carlo():
    # KL(q || N(0, I)) = E_q[log q(z) - log p(z)]; 200k samples give a standard error of
    # about sd/sqrt(n) ~ 0.003 here, so 0.02 is > 5 standard errors.
    q = est.Normal(jnp.array([0.5, -1.0, 2.0]), jnp.array([0.3, 1.5, 0.8]))
    p = est.standard_normal_like(q)
    z = q.sample(jax.random.key(0), (200_000,))
    mc = jnp.mean(jnp.sum(q.log_prob(z) - p.log_prob(z), -1))
    np.testing.assert_allclose(float(jnp.sum(q.kl(p))), float(mc), atol=0.02)


def test_elbo_aux_consistent_and_masked(setup):
    m, x, params = setup
    loss, aux = elbo.loss_fn(params, {"image": x}, jax.random.key(1), model=m)
    np.testing.assert_allclose(float(aux["elbo"]), float(aux["recon"] - aux["kl"]), rtol=1e-6)
    np.testing.assert_allclose(float(loss), -float(aux["elbo"]), rtol=1e-6)
    # A mask averages over the real examples only: padding rows change nothing.
    mask = jnp.array([1, 1, 1, 0, 0, 0], jnp.float32)
    _, aux_m = elbo.loss_fn(params, {"image": x, "example_mask": mask}, jax.random.key(1),
                            model=m)
    _, aux_3 = elbo.loss_fn(params, {"image": x[:3]}, jax.random.key(1), model=m)
    np.testing.assert_allclose(float(aux_m["kl"]), float(aux_3["kl"]), rtol=1e-5)


def test_elbo_gradient_is_finite_and_reaches_encoder_and_decoder(setup):
    m, x, params = setup
    g = jax.grad(lambda p: elbo.loss_fn(p, {"image": x}, jax.random.key(2), model=m)[0])(params)
    norms = {k: float(jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(t))))
             for k, t in g["params"].items()}
    assert set(norms) == {"encoder", "decoder"}
    assert all(np.isfinite(v) and v > 0 for v in norms.values())


def test_iwae_bound_above_elbo_and_rising_with_k(setup):
    m, x, params = setup
    bound = functools.partial(iwae.iwae_bound, params, x, model=m)
    # Average over 20 keys: L_k is non-decreasing in k in expectation, not per draw.
    keys = jax.random.split(jax.random.key(3), 20)
    means = {k: float(np.mean([bound(key, num_samples=k, chunk_size=min(k, 50)).mean()
                               for key in keys])) for k in (1, 10, 100)}
    _, aux = elbo.loss_fn(params, {"image": x}, jax.random.key(4), model=m, num_samples=256)
    # L_1 is the ELBO: 20 x 6 one-sample draws vs a 256-sample estimate agree to ~1 nat.
    assert abs(means[1] - float(aux["elbo"])) < 1.5
    assert means[1] < means[10] < means[100]


def test_iwae_chunking_does_not_change_the_bound(setup):
    m, x, params = setup
    a = iwae.iwae_bound(params, x, jax.random.key(5), model=m, num_samples=64, chunk_size=64)
    b = iwae.iwae_bound(params, x, jax.random.key(5), model=m, num_samples=64, chunk_size=16)
    assert a.shape == b.shape == (6,)
    # Different chunking draws different samples, so only statistical agreement is expected.
    assert abs(float(a.mean() - b.mean())) < 3.0
    with pytest.raises(ValueError, match="must divide"):
        iwae.iwae_bound(params, x, jax.random.key(5), model=m, num_samples=64, chunk_size=10)


def test_make_estimator_errors():
    assert make_estimator("pathwise").name == "pathwise"
    with pytest.raises(ValueError, match="unknown estimator 'nope'"):
        make_estimator("nope")
    with pytest.raises(ValueError, match="bad arguments"):
        make_estimator({"name": "pathwise", "temperature": 1.0})
