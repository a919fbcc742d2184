"""SimCLR / BYOL / MoCo v3 (`objectives.contrastive` on `models.contrastive`).

- NT-Xent's negatives are the global batch: the real jitted train step on 8 devices (the
  batch sharded on "data") gives the loss, accuracy and updated parameters of 1 device,
  while the loss with per-device negatives differs (so the comparison can fail);
- BYOL's target starts equal to the online parameters and, through the real step, follows
  target <- tau_k target + (1 - tau_k) online exactly (an explicit float64 recomputation);
- tau_k is the paper's 1 - (1 - tau_base)(cos(pi k / K) + 1)/2 at hand-computed steps;
- BYOL's loss is mean(2 - 2 cos(q1, t2)) + mean(2 - 2 cos(q2, t1)) (NumPy);
- no gradient reaches the target (d loss / d target == 0, and the online gradient is that of
  the loss with the targets as constants, with target == online);
- MoCo v3's loss is 2T [CE(q1 k2^T / T) + CE(q2 k1^T / T)] (NumPy);
- bad settings are one-line ValueErrors; a tiny SimCLR run on the digits lifts its
  held-out contrastive accuracy to over 10x chance (slow).
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ssl_gen.models import contrastive as cmodel
from ssl_gen.objectives import contrastive as cobj
from ssl_gen.objectives import contrastive_losses as cl
from ssl_gen.train import objective as objective_lib
from ssl_gen.train import sharding
from ssl_gen.train.step import TrainStep, init_state

TINY = dict(stem_width=4, widths=(4, 8), blocks=1, projector_hidden=16, projector_out=8)
B = 16


def _views(seed=0, b=B):
    return jax.random.uniform(jax.random.key(seed), (b, 2, 8, 8, 1))


def _objective(model, **kwargs):
    cfg = ml_collections.ConfigDict({"objective": {"name": "contrastive", "kwargs": kwargs}})
    return objective_lib.resolve(cfg, model)


def _state(model, obj, tx, seed=1):
    init = lambda k: init_state(model.init(k, jnp.zeros((1, 8, 8, 1))), obj, {"model": tx})
    return jax.jit(init)(jax.random.key(seed))


def _step(obj, tx, state, num_devices):
    mesh = sharding.make_mesh(num_devices)
    shard = sharding.state_shardings(jax.eval_shape(lambda: state), mesh)
    step = TrainStep(obj, {"model": tx}, state_sharding=shard,
                     batch_sharding=sharding.batch_sharded(mesh),
                     replicated=sharding.replicated(mesh))
    return step, mesh, jax.device_put(state, shard)


@pytest.mark.slow  # two compiles of the train step (1 and 8 devices): ~30 s under load
def test_nt_xent_negatives_are_the_global_batch_8_devices_equal_1():
    model = cmodel.Model(**TINY)
    obj = _objective(model, method="simclr", temperature=0.5)
    tx = optax.sgd(0.1)
    state = jax.device_get(_state(model, obj, tx))
    batch = {"views": _views()}
    out = {}
    for n in (1, 8):
        step, mesh, s = _step(obj, tx, jax.tree.map(jnp.array, state), n)
        sharded = jax.device_put(batch, sharding.batch_sharded(mesh))
        assert len(sharded["views"].sharding.device_set) == n  # really split over n devices
        new, m = step(s, sharded, jax.random.key(0))
        out[n] = jax.device_get((new["params"], new["collections"], m))
    p1, c1, m1 = out[1]
    p8, c8, m8 = out[8]
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    assert float(m8["contrastive_acc"]) == float(m1["contrastive_acc"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p8, p1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), c8, c1)
    # What the test tells apart: with each device's 2 examples as its only negatives the loss
    # is far lower (2 negatives per anchor instead of 30).
    (z, _), _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        state["params"] | state["collections"],
        jnp.concatenate([batch["views"][:, 0], batch["views"][:, 1]]))
    z1, z2 = z[:B], z[B:]
    local = np.mean([float(cl.nt_xent(z1[i:i + 2], z2[i:i + 2], 0.5)) for i in range(0, B, 2)])
    assert float(m1["loss"]) - local > 1.0, (float(m1["loss"]), local)


def _tau(k, base, total):  # the paper's formula, in float64
    return 1 - (1 - base) * (math.cos(math.pi * min(k, total) / total) + 1) / 2


def test_tau_schedule_is_the_papers_cosine():
    for k, want in [(0, 0.996), (500, 0.998), (1000, 1.0), (2000, 1.0),
                    (250, 1 - 0.004 * (math.sqrt(0.5) + 1) / 2)]:
        np.testing.assert_allclose(float(cobj.tau_schedule(k, 0.996, 1000)), want, rtol=0,
                                   atol=1e-7)
    assert float(cobj.tau_schedule(0, 0.0, 10)) == 0.0  # tau_base 0: target = online


@pytest.mark.parametrize("method", ["byol", "moco_v3"])
def test_target_is_an_exact_ema_of_the_online_parameters(method):
    model = cmodel.Model(**TINY, predictor_hidden=16)
    total, base = 4, 0.5  # a fast schedule: the target lags the online weights visibly
    obj = _objective(model, method=method, tau_base=base, total_steps=total)
    tx = optax.sgd(0.5)
    state = _state(model, obj, tx)
    jax.tree.map(lambda t, o: np.testing.assert_array_equal(t, o),
                 state["extra"]["target"], state["params"])  # starts as the online copy
    step, mesh, state = _step(obj, tx, state, 1)
    want = jax.tree.map(lambda a: np.asarray(a, np.float64),
                        jax.device_get(state["extra"]["target"]))
    for k in range(3):
        state, m = step(state, {"views": _views(k)}, jax.random.key(0))
        online = jax.device_get(state["params"])
        tau = _tau(k, base, total)
        np.testing.assert_allclose(float(m["tau"]), tau, rtol=1e-6)
        want = jax.tree.map(lambda t, o, tau=tau: tau * t + (1 - tau) * np.asarray(o, np.float64),
                            want, online)
        got = jax.device_get(state["extra"]["target"])
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7),
                     got, want)
    gap = max(float(np.max(np.abs(np.asarray(o) - g))) for o, g in zip(
        jax.tree.leaves(online), jax.tree.leaves(got), strict=True))
    assert gap > 1e-3  # the target is not the online network (the EMA did something)


@functools.partial(jax.jit, static_argnums=0)
def _jit_parts(model, params, target, collections, views):
    x = jnp.concatenate([views[:, 0], views[:, 1]])
    (_, aux), _ = model.apply(params | collections, x, train=True, mutable=["batch_stats"])
    (_, t), _ = model.apply(target | collections, x, train=True, mutable=["batch_stats"],
                            method="project")
    return aux["prediction"], t


def _parts(model, params, target, collections, views):
    q, t = _jit_parts(model, params, target, collections, views)
    return np.asarray(q, np.float64), np.asarray(t, np.float64)


def _loss(model, **kwargs):
    """The jitted loss_fn(params, views, target, collections) of `method` on `model`."""
    def fn(params, views, target, collections):
        return cobj.loss_fn(params, {"views": views}, None, model=model,
                            collections=collections, extra={"target": target}, step=0,
                            **kwargs)
    return jax.jit(fn)


def _cos(a, b):
    return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def byol_setup():
    model = cmodel.Model(**TINY, predictor_hidden=16)
    variables = jax.jit(model.init)(jax.random.key(3), jnp.zeros((1, 8, 8, 1)))
    params, collections = {"params": variables["params"]}, {"batch_stats": variables["batch_stats"]}
    noise = jax.random.key(4)
    target = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(noise, p.shape), params)
    return model, params, target, collections


def test_byol_loss_is_two_minus_two_cosine(byol_setup):
    model, params, target, collections = byol_setup
    views = _views(5)
    loss, aux = _loss(model, method="byol")(params, views, target, collections)
    q, t = _parts(model, params, target, collections, views)
    want = np.mean(2 - 2 * _cos(q[:B], t[B:])) + np.mean(2 - 2 * _cos(q[B:], t[:B]))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    np.testing.assert_allclose(cobj.regression_loss(jnp.asarray(q), jnp.asarray(t)),
                               np.sum((unit(q) - unit(t)) ** 2, -1), rtol=1e-5, atol=1e-6)
    assert aux["collections"].keys() == collections.keys()


def test_moco_v3_loss_is_symmetric_scaled_infonce(byol_setup):
    model, params, target, collections = byol_setup
    views, temp = _views(6), 0.2
    loss, _ = _loss(model, method="moco_v3", temperature=temp)(params, views, target,
                                                               collections)
    q, k = _parts(model, params, target, collections, views)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)

    def ce(a, b):  # mean over rows of -log softmax(a b^T / T) at the diagonal
        s = unit(a) @ unit(b).T / temp
        s = s - s.max(1, keepdims=True)
        return np.mean(np.log(np.exp(s).sum(1)) - np.diag(s))

    want = 2 * temp * (ce(q[:B], k[B:]) + ce(q[B:], k[:B]))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_no_gradient_reaches_the_target(byol_setup):
    model, params, _, collections = byol_setup
    target = jax.tree.map(jnp.copy, params)  # as at step 0: target == online
    views = _views(7)
    loss = lambda p, t: cobj.loss_fn(p, {"views": views}, None, model=model,
                                     collections=collections, extra={"target": t}, step=0,
                                     method="byol")[0]
    g_online, g_target = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, target)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(g_target))
    # The online gradient is that of the loss against constant targets.
    _, t = _parts(model, params, target, collections, views)
    t = jnp.asarray(t, jnp.float32)

    def against_constants(p):
        x = jnp.concatenate([views[:, 0], views[:, 1]])
        (_, aux), _ = model.apply(p | collections, x, train=True, mutable=["batch_stats"])
        q = aux["prediction"]
        return (jnp.mean(cobj.regression_loss(q[:B], t[B:]))
                + jnp.mean(cobj.regression_loss(q[B:], t[:B])))

    want = jax.jit(jax.grad(against_constants))(params)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7),
                 g_online, want)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_online)) > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "temperature=0.0 must be a number > 0"),
    (dict(temperature=-1), "temperature=-1 must be"),
    (dict(method="byol", tau_base=1.5), r"tau_base=1.5 must be in \[0, 1\]"),
    (dict(method="byol", tau_base=-0.1), "tau_base=-0.1 must be"),
    (dict(method="simsiam"), "method='simsiam' must be one of simclr, byol, moco_v2, moco_v3"),
    (dict(total_steps=0), "total_steps=0 must be an int >= 1"),
])
def test_bad_settings_are_one_line_errors(kwargs, match):
    model = cmodel.Model(**TINY, predictor_hidden=16 if kwargs.get("method") == "byol" else None)
    params = {"params": {}}
    with pytest.raises(ValueError, match=match) as e:
        cobj.init_extra(params, model=model, **kwargs)
    assert "\n" not in str(e.value)


def test_method_and_model_must_agree():
    with pytest.raises(ValueError, match="needs a predictor"):
        cobj.init_extra({}, model=cmodel.Model(**TINY), method="byol")
    with pytest.raises(ValueError, match="has no predictor"):
        cobj.init_extra({}, model=cmodel.Model(**TINY, predictor_hidden=8), method="simclr")
    with pytest.raises(ValueError, match="no 'views' field"):
        cobj.loss_fn({}, {"image": jnp.zeros((2, 8, 8, 1))}, None, model=cmodel.Model(**TINY),
                     collections={}, extra={}, step=0)


def test_model_is_a_feature_extractor_with_the_documented_shapes():
    from ssl_gen.models import protocols

    model = cmodel.Model(**TINY, predictor_hidden=16)
    assert isinstance(model, protocols.FeatureExtractor)
    x = jnp.zeros((3, 8, 8, 1))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    z, aux = jax.jit(model.apply)(variables, x)
    assert z.shape == (3, 8) and aux["prediction"].shape == (3, 8)
    assert model.apply(variables, x, method=model.features).shape == (3, 8)  # widths[-1]


@pytest.mark.slow
def test_a_tiny_simclr_run_learns_to_find_the_positive():
    """80 steps of batch 64 on the digits, the real augmentations and train step: the
    held-out contrastive accuracy (eval mode; chance 1/127 = 0.008) rises by at least 0.04
    and past 10x chance. Seeded (init, views, batches), so deterministic on one platform;
    measured here 0.070 -> 0.148: the margins leave room for other platforms' float
    rounding, not for a method that learns nothing."""
    from sklearn.datasets import load_digits

    import experiments.simclr as cfg
    from ssl_gen.data import preprocess as pp

    digits = load_digits()
    images = (digits.images[..., None] / 16.0).astype(np.float32)  # (1797, 8, 8, 1)
    ops = pp.parse([{"name": "views", "ops": cfg.AUGMENT, "num": 2}])
    make = lambda idx, epoch: jnp.asarray(pp.apply(ops, {"image": images[idx]}, pp.Context.make(
        0, epoch, idx))["views"])
    held_out = make(np.arange(1600, 1664), 0)  # 64 digits never trained on
    model = cmodel.Model(stem_width=16, widths=(16, 32), projector_hidden=64, projector_out=32)
    obj = _objective(model, method="simclr", temperature=0.5)
    tx = optax.adam(3e-3)
    step, _, state = _step(obj, tx, _state(model, obj, tx), 1)

    @jax.jit
    def accuracy(state, views):
        x = jnp.concatenate([views[:, 0], views[:, 1]])
        z, _ = model.apply(state["params"] | state["collections"], x)  # eval mode
        logits, labels = cl.nt_xent_logits(z[:64], z[64:])
        return jnp.mean(jnp.argmax(logits, 1) == labels)

    before = float(accuracy(state, held_out))
    rng = np.random.default_rng(0)
    for k in range(80):
        state, _ = step(state, {"views": make(rng.choice(1600, 64, replace=False), k)},
                        jax.random.key(0))
    after = float(accuracy(state, held_out))
    assert after > before + 0.04 and after > 10 / 127, (before, after)
