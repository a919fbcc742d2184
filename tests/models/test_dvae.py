"""The discrete-latent VAE module: shapes of every entry point, likelihood, prior, variants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import dvae


def _x(shape=(4, 8, 8, 1), levels=2, seed=0):
    return np.random.default_rng(seed).integers(0, levels, size=shape).astype(np.uint8)


@pytest.mark.parametrize("latent, code", [("categorical", (3, 5)), ("bernoulli", (3,))])
def test_shapes_of_every_entry_point(latent, code):
    m = dvae.Model(latent=latent, num_latents=3, num_classes=5, hidden=(8,))
    assert m.latent_shape == code and m.latent_size == int(np.prod(code))
    x = _x()
    params = m.init({"params": jax.random.key(0)}, x)

    @jax.jit  # one compilation for every entry point (eager op-by-op is slow on CPU)
    def outputs(params, key):
        out, aux = m.apply(params, x)
        z = aux["z"]
        return dict(
            logits=m.apply(params, x, method=m.encode), out=out, z=z,
            mode=m.apply(params, x, method=m.posterior_mode),
            ll=m.apply(params, z, x, method=m.log_likelihood),
            mean=m.apply(params, z, method=m.decode_mean),
            # The decoder takes relaxed codes too (Gumbel-Softmax evaluates it there).
            ll_relaxed=m.apply(params, jnp.full(z.shape, 0.3), x, method=m.log_likelihood),
            prior=m.apply(params, key, 6, method=m.sample_prior),
            z_train=m.apply(params, x, train=True, rngs={"sample": key})[1]["z"])

    o = jax.tree.map(np.asarray, outputs(params, jax.random.key(1)))
    assert o["logits"].shape == (4, *code) and o["out"].shape == (4, 8, 8, 1)
    # train=False decodes the mode: one-hot rows (categorical) or bits equal to 1[logit > 0].
    np.testing.assert_array_equal(o["mode"], o["z"])
    if latent == "categorical":
        np.testing.assert_array_equal(o["mode"].sum(-1), 1)
        np.testing.assert_array_equal(o["mode"].argmax(-1), o["logits"].argmax(-1))
    else:
        np.testing.assert_array_equal(o["mode"], o["logits"] > 0)
    assert o["ll"].shape == (4,) and (o["ll"] < 0).all() and np.isfinite(o["ll_relaxed"]).all()
    assert o["mean"].shape == (4, 8, 8, 1) and 0 <= o["mean"].min() <= o["mean"].max() <= 1
    assert o["prior"].shape == (6, *code) and set(np.unique(o["prior"])) <= {0.0, 1.0}
    assert o["z_train"].shape == (4, *code) and set(np.unique(o["z_train"])) <= {0.0, 1.0}


def test_train_samples_follow_the_posterior():
    # 4,000 posterior samples of one example: class frequencies match softmax(logits) within
    # 5 standard errors (sqrt(p (1 - p) / n) <= 0.008), so a sampling bug cannot hide.
    m = dvae.Model(latent="categorical", num_latents=2, num_classes=3, hidden=())
    x = np.repeat(_x(shape=(1, 8, 8, 1)), 4000, axis=0)
    params = m.init({"params": jax.random.key(0)}, x[:1])
    params = jax.tree.map(lambda v: v * 20.0, params)  # spread the probabilities
    _, aux = jax.jit(lambda p, k: m.apply(p, x, train=True, rngs={"sample": k}))(
        params, jax.random.key(3))
    probs = np.asarray(jax.nn.softmax(aux["logits"][0], -1))
    np.testing.assert_allclose(np.asarray(aux["z"]).mean(0), probs, atol=0.04)


def test_prior_samples_are_uniform():
    m = dvae.Model(latent="bernoulli", num_latents=5, hidden=())
    params = m.init({"params": jax.random.key(0)}, _x())
    z = np.asarray(jax.jit(lambda p, k: m.apply(p, k, 4000, method=m.sample_prior))(
        params, jax.random.key(4)))
    np.testing.assert_allclose(z.mean(0), 0.5, atol=0.04)  # 5 standard errors of 0.0079


def test_bernoulli_log_likelihood_matches_direct_sum():
    m = dvae.Model(latent="bernoulli", num_latents=3, hidden=(8,))
    x = _x()
    params = m.init({"params": jax.random.key(0)}, x)
    z = jnp.array([[0.0, 1.0, 1.0]] * 4)
    p = 1 / (1 + np.exp(-np.asarray(m.apply(params, z, method=m.decode), np.float64)))
    direct = np.sum(np.where(x == 1, np.log(p), np.log(1 - p)).reshape(4, -1), -1)
    np.testing.assert_allclose(m.apply(params, z, x, method=m.log_likelihood), direct, rtol=1e-5)


def test_categorical_pixels_for_grey_levels():
    m = dvae.Model(latent="bernoulli", num_latents=3, hidden=(), likelihood="categorical",
                   num_levels=17)
    x = _x(levels=17)
    params = m.init({"params": jax.random.key(0)}, x)
    z = jnp.ones((4, 3))
    assert m.apply(params, z, method=m.decode).shape == (4, 8, 8, 1, 17)
    assert m.apply(params, z, x, method=m.log_likelihood).shape == (4,)


def test_variant_table_and_errors():
    assert dvae.Model(variant="jang17").latent_shape == (20, 10)
    assert dvae.Model(variant="linear").latent_shape == (200,)
    assert dvae.Model(variant="linear").arch["hidden"] == ()
    nonlinear = dvae.Model(variant="nonlinear").arch
    assert nonlinear["hidden"] == (200, 200) and nonlinear["activation"] == "tanh"
    assert dvae.Model(variant="disarm_nonlinear").arch["activation"] == "leaky_relu"
    init = lambda m, x=None: m.init({"params": jax.random.key(0)}, _x() if x is None else x)
    with pytest.raises(ValueError, match="unknown variant"):
        init(dvae.Model(variant="nope"))
    with pytest.raises(ValueError, match="latent must be one of"):
        init(dvae.Model(latent="gaussian"))
    with pytest.raises(ValueError, match="activation must be one of"):
        init(dvae.Model(activation="swish"))
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        init(dvae.Model(num_classes=1))
    with pytest.raises(ValueError, match="image_shape"):
        init(dvae.Model(hidden=(4,)), _x(shape=(2, 28, 28, 1)))
