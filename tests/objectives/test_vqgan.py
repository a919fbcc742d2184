"""The VQGAN objective (ssl_gen.objectives.vqgan) against explicit computations.

Tiny model (the `tiny` variant on 16x16 RGB images), so each check runs in seconds: the
adaptive weight against two separate jax.grad calls, the discriminator losses against
NumPy, the disc_start switch, R1 against an explicit input gradient, the two parts on the
trainer's compiled step, and the one-line config errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_gen.models import vqgan
from ssl_gen.objectives import vqgan as objective
from ssl_gen.train import config_check, sharding
from ssl_gen.train.objective import Objective
from ssl_gen.train.step import TrainStep, init_state
from tests.train.conftest import load_config

KEY = jax.random.key(0)


def _setup(quantizer="vq", **kw):
    model = vqgan.Model(variant="tiny", image_shape=(16, 16, 3), quantizer=quantizer, **kw)
    x = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3)) * 255
    v = model.init(KEY, x)
    params = {"params": v["params"]}
    collections = {k: v[k] for k in v if k != "params"}
    return model, params, collections, {"image": x}


def _kernel(params):
    t = params
    for k in vqgan.LAST_LAYER:
        t = t[k]
    return t


def _with_kernel(params, k):
    p = jax.tree.map(lambda a: a, params)
    p["params"]["generator"]["decoder"]["conv_out"]["kernel"] = k
    return p


def _explicit_terms(model, params, batch, kernel, perceptual="ssim", loss="hinge"):
    """(L_rec, L_GAN) as functions of W_L, written out without the objective's vjp."""
    x_hat, aux = model.apply(_with_kernel(params, kernel), batch["image"])
    u = aux["target"]
    per_img = lambda a: a.reshape(a.shape[0], -1).mean(-1)
    rec = per_img(jnp.abs(x_hat - u)).mean()
    if perceptual == "ssim":
        from ssl_gen.models import perceptual as P
        rec = rec + (1 - P.ssim(x_hat, u)).mean()
    d = model.apply(_with_kernel(params, kernel), x_hat, method=model.discriminate)
    gan = per_img(-d if loss == "hinge" else jax.nn.softplus(-d)).mean()
    return rec, gan


@pytest.mark.parametrize("loss", ["hinge", "non_saturating"])
def test_adaptive_weight_equals_the_explicit_two_gradient_ratio(loss):
    """lambda = ||dL_rec/dW_L|| / (||dL_GAN/dW_L|| + 1e-4), by two separate jax.grad calls
    (quantizer "vq": no EMA update, so train=True and train=False agree)."""
    model, params, coll, batch = _setup()
    k = _kernel(params)
    g_rec = jax.grad(lambda w: _explicit_terms(model, params, batch, w, loss=loss)[0])(k)
    g_gan = jax.grad(lambda w: _explicit_terms(model, params, batch, w, loss=loss)[1])(k)
    want = np.linalg.norm(np.asarray(g_rec)) / (np.linalg.norm(np.asarray(g_gan)) + 1e-4)
    _, aux = objective.generator_loss(params, batch, KEY, model=model, collections=coll,
                                      step=jnp.int32(10), loss=loss, disc_start=0)
    np.testing.assert_allclose(aux["adaptive_weight"], want, rtol=1e-4)
    rec, gan = _explicit_terms(model, params, batch, k, loss=loss)
    np.testing.assert_allclose(aux["rec_loss"], rec, rtol=1e-5)
    np.testing.assert_allclose(aux["gan_term"], 0.8 * want * gan, rtol=1e-4)
    # The clamp: a tiny maximum caps lambda, exactly.
    _, capped = objective.generator_loss(params, batch, KEY, model=model, collections=coll,
                                         step=jnp.int32(10), loss=loss,
                                         max_adaptive_weight=want / 2)
    np.testing.assert_allclose(capped["adaptive_weight"], want / 2, rtol=1e-6)
    assert objective.adaptive_weight(jnp.ones(3), jnp.zeros(3), 5.0) == 5.0  # 1.73 / 1e-4


def test_the_adaptive_weight_is_detached():
    """d loss / d params holds no gradient of lambda: the objective's gradient equals that of
    L_rec + c * L_GAN + vq_loss with c the (constant) weight it reports."""
    model, params, coll, batch = _setup()
    kw = dict(model=model, collections=coll, step=jnp.int32(10), disc_start=0)
    g, aux = jax.grad(lambda p: objective.generator_loss(p, batch, KEY, **kw), has_aux=True)(
        params)
    c = float(aux["gan_term"]) / float(aux["gan_loss"])

    def fixed(p):
        _, a = objective.generator_loss(p, batch, KEY, **kw)
        return a["rec_loss"] + c * a["gan_loss"] + a["vq_loss"]

    g2 = jax.grad(fixed)(params)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-6)


def test_the_gan_term_is_zero_before_disc_start_and_on_from_it():
    model, params, coll, batch = _setup()
    kw = dict(model=model, collections=coll, disc_start=5)
    loss_at = lambda s: objective.generator_loss(params, batch, KEY, step=jnp.int32(s), **kw)
    (before, a), (after, b) = loss_at(4), loss_at(5)
    assert float(a["gan_term"]) == 0.0 and float(b["gan_term"]) != 0.0
    np.testing.assert_allclose(before, a["rec_loss"] + a["vq_loss"], rtol=1e-6)
    np.testing.assert_allclose(after - before, b["gan_term"], rtol=1e-4)
    # Before disc_start no gradient reaches the generator through the discriminator: the
    # same gradient as without any GAN term (disc_weight = 0 skips the discriminator).
    grad = lambda s, **o: jax.grad(lambda p: objective.generator_loss(
        p, batch, KEY, step=jnp.int32(s), **{**kw, **o})[0])(params)["params"]["generator"]
    for x, y in zip(jax.tree.leaves(grad(4)), jax.tree.leaves(grad(4, disc_weight=0.0)),
                    strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(x, y, atol=1e-6) for x, y in zip(
        jax.tree.leaves(grad(5)), jax.tree.leaves(grad(4)), strict=True))


@pytest.mark.parametrize("loss", ["hinge", "non_saturating"])
def test_discriminator_losses_match_numpy(loss):
    rng = np.random.default_rng(0)
    r, f = rng.normal(size=(3, 4, 4)) * 2, rng.normal(size=(3, 4, 4)) * 2
    sp = lambda v: np.log1p(np.exp(v))
    want = (0.5 * (np.maximum(0, 1 - r) + np.maximum(0, 1 + f)) if loss == "hinge"
            else 0.5 * (sp(-r) + sp(f)))
    np.testing.assert_allclose(objective.discriminator_per_logit(r, f, loss), want, rtol=1e-5)
    want_g = -f if loss == "hinge" else sp(-f)
    np.testing.assert_allclose(objective.generator_adversarial(jnp.asarray(f), loss), want_g,
                               rtol=1e-5)
    # And the part's loss is their mean on the model's real and reconstructed patch logits.
    model, params, coll, batch = _setup()
    total, aux = objective.discriminator_loss(params, batch, KEY, model=model,
                                              collections=coll, loss=loss)
    x_hat, a = model.apply({**params, **coll}, batch["image"])
    d_r = np.asarray(model.apply(params, a["target"], method=model.discriminate))
    d_f = np.asarray(model.apply(params, x_hat, method=model.discriminate))
    want_d = (0.5 * (np.maximum(0, 1 - d_r) + np.maximum(0, 1 + d_f)) if loss == "hinge"
              else 0.5 * (sp(-d_r) + sp(d_f)))
    np.testing.assert_allclose(total, want_d.mean(), rtol=1e-5)
    np.testing.assert_allclose(aux["d_real"], d_r.mean(), rtol=1e-5, atol=1e-7)


def test_r1_penalty_is_half_the_weighted_squared_input_gradient():
    model, params, coll, batch = _setup()
    plain, _ = objective.discriminator_loss(params, batch, KEY, model=model, collections=coll)
    total, aux = objective.discriminator_loss(params, batch, KEY, model=model,
                                              collections=coll, r1_weight=10.0)
    u = batch["image"] / 255.0
    r1 = 0.0
    for i in range(u.shape[0]):  # one image at a time: its summed patch logits
        g = jax.grad(lambda v: jnp.sum(model.apply(params, v[None],
                                                   method=model.discriminate)))(u[i])
        r1 += float(jnp.sum(g**2)) / u.shape[0]
    np.testing.assert_allclose(aux["r1"], r1, rtol=1e-4)
    np.testing.assert_allclose(total - plain, 5.0 * r1, rtol=1e-4)


def test_the_two_parts_update_only_their_own_parameters_and_the_codebook_stats():
    """On the trainer's compiled step (one device): the discriminator starts at step 2
    (disc_start 3, warm-up 1); the generator's parameters change every step, the
    discriminator's from step 2 only; the EMA statistics move; one trace."""
    model, params, coll, batch = _setup(quantizer="ema", restart=True)
    parts = objective.parts(model=model, disc_start=3, disc_warmup=1)
    assert [p.name for p in parts] == ["generator", "discriminator"]
    assert [p.start_step for p in parts] == [0, 2]
    txs = {p.name: optax.adam(1e-3, b1=0.5, b2=0.9) for p in parts}
    mesh = sharding.make_mesh(1)
    repl = sharding.replicated(mesh)
    step = TrainStep(Objective(tuple(parts), None, None), txs, state_sharding=repl,
                     batch_sharding=sharding.batch_sharded(mesh), replicated=repl)
    state = jax.device_put(init_state({**params, **coll}, Objective(tuple(parts), None, None),
                                      txs), repl)
    batch = {**batch, "example_mask": jnp.ones((4,), jnp.float32)}
    changed = []
    for _ in range(4):
        before = jax.tree.map(np.array, {"p": state["params"]["params"],
                                         "c": state["collections"]})
        state, m = step(state, batch, jax.random.key(3))
        diff = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(
            jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
        changed.append((diff(before["p"]["generator"], state["params"]["params"]["generator"]),
                        diff(before["p"]["discriminator"],
                             state["params"]["params"]["discriminator"]),
                        diff(before["c"], state["collections"])))
        assert float(m["discriminator/updated"]) == float(changed[-1][1])
    assert changed == [(True, False, True), (True, False, True), (True, True, True),
                       (True, True, True)]
    assert float(m["generator/gan_term"]) != 0.0 and step.num_traces == 1


@pytest.mark.parametrize("override,match", [
    ({"loss": "wasserstein"}, "loss must be one of"),
    ({"perceptual": "lpips"}, "perceptual must be one of"),
    ({"disc_start": -1}, "disc_start must be an int"),
    ({"disc_weight": -0.5}, "disc_weight must be a number"),
    ({"l1_weight": 0.0, "perceptual_weight": 0.0}, "nothing trains the reconstruction"),
])
def test_bad_settings_are_one_line_config_errors_before_compile(override, match):
    config = load_config("experiments/vqgan.py", "runlocal")
    config.objective.kwargs.update(override)
    with pytest.raises(config_check.ConfigError, match=match) as e:
        config_check.validate(config)
    assert "\n" not in str(e.value)
