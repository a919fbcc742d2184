"""The MAE objective: the loss is the model's masked reconstruction loss, the rng sets the
mask, padded examples do not count, it jits once, its kwargs pass the config check; and a
few optimizer steps on the embedded digits lower it (slow)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_gen.models import mae as mae_model
from ssl_gen.objectives import mae
from ssl_gen.train import objective
from ssl_gen.train.config_check import ConfigError

MODEL = mae_model.Model(variant="tiny", image_size=8, channels=1)
X = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
ALL = jnp.ones(4)


@pytest.fixture(scope="module")
def params():
    return jax.jit(lambda k: MODEL.init(k, X, key=k))(jax.random.key(1))


@pytest.fixture(scope="module")
def loss():
    count = [0]

    def fn(p, batch, rng):  # every call passes the same batch structure (an example_mask)
        count[0] += 1
        return mae.loss_fn(p, batch, rng, model=MODEL)

    jitted = jax.jit(fn)
    jitted.traces = count
    return jitted


def test_loss_is_the_masked_reconstruction_loss(params, loss):
    rng = jax.random.key(5)
    value, aux = loss(params, {"image": X, "example_mask": ALL}, rng)
    mask_key, _ = jax.random.split(rng)
    pred, out = jax.jit(lambda p: MODEL.apply(p, X, train=True, key=mask_key))(params)
    want = mae_model.reconstruction_loss(X, pred, out["mask"], 2, norm_pix_loss=True)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    assert float(aux["mask_fraction"]) == 0.75  # 12 of 16 masked
    assert np.isfinite(float(aux["loss_visible"]))


def test_rng_sets_the_mask_and_it_traces_once(params, loss):
    a, _ = loss(params, {"image": X, "example_mask": ALL}, jax.random.key(1))
    traced = loss.traces[0]
    a2, _ = loss(params, {"image": X, "example_mask": ALL}, jax.random.key(1))
    b, _ = loss(params, {"image": X * 1.0, "example_mask": ALL}, jax.random.key(2))
    assert float(a) == float(a2) and float(a) != float(b)
    assert traced == 1 and loss.traces[0] == 1  # one trace for every call so far


def test_padded_examples_do_not_count(params, loss):
    em = jnp.array([1.0, 1.0, 1.0, 0.0])
    garbage = X.at[3].set(100.0 * jax.random.normal(jax.random.key(9), (8, 8, 1)))
    a, _ = loss(params, {"image": X, "example_mask": em}, jax.random.key(3))
    b, _ = loss(params, {"image": garbage, "example_mask": em}, jax.random.key(3))
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_config_check_accepts_its_kwargs_and_refuses_others():
    cfg = ml_collections.ConfigDict({"objective": {"name": "mae", "kwargs": {
        "mask_ratio": 0.6, "norm_pix_loss": False}}})
    objective.check_config(cfg)
    cfg.objective.kwargs.mask_rate = 0.5
    with pytest.raises(ConfigError, match="mask_rate"):
        objective.check_config(cfg)
    with pytest.raises(ValueError, match="mask_ratio must be"):
        mae.loss_fn({}, {"image": X}, jax.random.key(0), model=MODEL, mask_ratio=1.0)


@pytest.mark.slow
def test_a_few_adam_steps_on_digits_lower_the_loss():
    import optax
    from sklearn.datasets import load_digits

    images = load_digits().images[:256, :, :, None].astype(np.float32) / 16.0
    params = jax.jit(lambda k: MODEL.init(k, X, key=k))(jax.random.key(0))
    opt = optax.adamw(3e-3, b2=0.95, weight_decay=0.05)
    state = opt.init(params)

    @jax.jit
    def step(p, s, batch, rng):
        (value, _), g = jax.value_and_grad(mae.loss_fn, has_aux=True)(
            p, {"image": batch}, rng, model=MODEL, norm_pix_loss=False)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    eval_loss = jax.jit(lambda p: jnp.mean(jnp.stack([
        mae.loss_fn(p, {"image": images}, jax.random.key(100 + i), model=MODEL,
                    norm_pix_loss=False)[0] for i in range(4)])))
    before = float(eval_loss(params))
    for i in range(60):
        batch = images[(i * 64) % 256:(i * 64) % 256 + 64]
        params, state, _ = step(params, state, batch, jax.random.key(i))
    after = float(eval_loss(params))
    assert after < 0.5 * before, (before, after)
