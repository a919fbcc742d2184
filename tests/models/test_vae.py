"""The VAE module: shapes of every entry point, likelihoods against direct computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import vae


def _x(shape=(4, 8, 8, 1), levels=17, seed=0):
    return np.random.default_rng(seed).integers(0, levels, size=shape).astype(np.uint8)


# conv compiles slowly on CPU: one likelihood is enough for it (the heads are shared code).
@pytest.mark.parametrize("arch, likelihood", [
    ("mlp", "categorical"), ("mlp", "bernoulli"), ("conv", "bernoulli")])
def test_shapes(arch, likelihood):
    m = vae.Model(arch=arch, likelihood=likelihood, hidden=(8, 16), latent_dim=3)
    x = _x(levels=17 if likelihood == "categorical" else 2)
    params = m.init({"params": jax.random.key(0)}, x)
    logits, aux = m.apply(params, x)
    want = (4, 8, 8, 1, 17) if likelihood == "categorical" else (4, 8, 8, 1)
    assert logits.shape == want
    assert aux["loc"].shape == aux["scale"].shape == (4, 3)
    assert bool(jnp.all(aux["scale"] > 0))
    ll = m.apply(params, aux["z"], x, method=m.log_likelihood)
    assert ll.shape == (4,) and bool(jnp.all(ll < 0))
    mean = m.apply(params, aux["z"], method=m.decode_mean)
    assert mean.shape == (4, 8, 8, 1) and float(mean.min()) >= 0 and float(mean.max()) <= 1
    _, aux_train = m.apply(params, x, train=True, rngs={"sample": jax.random.key(1)})
    assert not np.allclose(aux_train["z"], aux["loc"])  # train=True samples the posterior


def test_categorical_log_likelihood_matches_direct_sum():
    m = vae.Model(hidden=(8,), latent_dim=2)
    x = _x()
    params = m.init({"params": jax.random.key(0)}, x)
    z = jnp.ones((4, 2))
    logits = np.asarray(m.apply(params, z, method=m.decode), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    direct = np.array([sum(logp[b, i, j, 0, x[b, i, j, 0]] for i in range(8) for j in range(8))
                       for b in range(4)])
    got = m.apply(params, z, x, method=m.log_likelihood)
    np.testing.assert_allclose(got, direct, rtol=1e-5)


def test_bernoulli_log_likelihood_matches_direct_sum():
    m = vae.Model(hidden=(8,), latent_dim=2, likelihood="bernoulli")
    x = _x(levels=2)
    params = m.init({"params": jax.random.key(0)}, x)
    z = jnp.ones((4, 2))
    p = 1 / (1 + np.exp(-np.asarray(m.apply(params, z, method=m.decode), np.float64)))
    direct = np.sum(np.where(x == 1, np.log(p), np.log(1 - p)).reshape(4, -1), -1)
    np.testing.assert_allclose(m.apply(params, z, x, method=m.log_likelihood), direct, rtol=1e-5)


def test_variant_table_and_errors():
    assert vae.Model(variant="kw14").latent_size == 20
    with pytest.raises(ValueError, match="unknown variant"):
        vae.Model(variant="nope").init({"params": jax.random.key(0)}, _x())
    with pytest.raises(ValueError, match="image_shape"):
        vae.Model().init({"params": jax.random.key(0)}, _x(shape=(2, 28, 28, 1)))
    with pytest.raises(ValueError, match="divisible"):
        vae.Model(arch="conv", hidden=(8, 8, 8, 8)).init({"params": jax.random.key(0)}, _x())
