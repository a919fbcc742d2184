"""The VQ-VAE objective through the train step (ssl_gen.train.step.TrainStep).

- the encoder's gradient is the decoder's gradient at z_q pulled back through the encoder
  (straight-through), plus beta times the commitment gradient, and nothing else;
- the EMA statistics live in state["collections"], move only by the objective's
  mutable apply, and are the same after N steps on 1 and on 8 devices (the counts and sums
  are over the global batch, restarts draw from it);
- a checkpoint round trip restores them, and the restored state steps on identically.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_gen.models import quantizers, vqvae
from ssl_gen.objectives import vqvae as objective
from ssl_gen.train import checkpoint, sharding
from ssl_gen.train.objective import SINGLE, Objective, Part
from ssl_gen.train.step import TrainStep, init_state


def _model(**kw):
    return vqvae.Model(image_shape=(8, 8, 1), data_range=(0.0, 16.0), variant="tiny",
                       num_codes=16, **kw)


def _images(key, n=16):
    return jax.random.randint(jax.random.key(key), (n, 8, 8, 1), 0, 17).astype(jnp.uint8)


def _step(model, n_devices, lr=1e-2):
    loss = functools.partial(objective.loss_fn, model=model)
    obj = Objective((Part(SINGLE, loss),), None, None)
    tx = optax.adam(lr)
    mesh = sharding.make_mesh(n_devices)
    repl = sharding.replicated(mesh)
    step = TrainStep(obj, {SINGLE: tx}, state_sharding=repl,
                     batch_sharding=sharding.batch_sharded(mesh), replicated=repl)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1), jnp.uint8))
    state = jax.device_put(init_state(variables, obj, {SINGLE: tx}), repl)
    return step, state, sharding.batch_sharded(mesh)


@pytest.mark.parametrize("beta", [0.0, 0.25])
def test_the_encoder_gradient_is_straight_through_plus_beta_commitment(beta):
    model = _model(quantizer="ema", beta=beta)
    x = _images(1, 4)
    variables = model.init(jax.random.key(0), x)
    params, stats = {"params": variables["params"]}, {"vq_stats": variables["vq_stats"]}

    @jax.jit  # one compile, not one per eager op
    def both(params):
        grads = jax.grad(lambda p: objective.loss_fn(
            p, {"image": x}, jax.random.key(1), model=model, collections=stats)[0])(params)
        # By hand: z_e, its codes e, the decoder's gradient g at z_q = e, then the
        # encoder's VJP of g + beta * d commitment / d z_e.
        enc = lambda p: model.apply({**p, **stats}, x, method=model.encode)
        z_e, vjp = jax.vjp(enc, params)
        _, aux = model.apply({**params, **stats}, z_e, method=model.quantize)
        e = model.apply({**params, **stats}, aux["indices"],
                        method=lambda m, i: m.vq.codes(i))
        target = vqvae.to_unit(x, model.data_range)
        g = jax.grad(lambda zq: jnp.mean((model.apply(params, zq, method=model.decode)
                                          - target) ** 2))(e)
        (expect,) = vjp(g + beta * 2 * (z_e - e) / z_e.size)
        return grads, expect

    grads, expect = both(params)
    got, want = grads["params"]["encoder"], expect["params"]["encoder"]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)
    assert np.abs(jax.tree.leaves(got)[0]).max() > 0
    assert "vq" not in grads["params"] or not jax.tree.leaves(grads["params"]["vq"])


def test_the_loss_returns_the_updated_statistics_and_usage_metrics():
    model = _model(quantizer="ema", restart=True)
    x = _images(2, 8)
    variables = model.init(jax.random.key(0), x)
    stats = {"vq_stats": variables["vq_stats"]}
    loss, aux = jax.jit(lambda p, s: objective.loss_fn(
        p, {"image": x}, jax.random.key(3), model=model, collections=s))(
        {"params": variables["params"]}, stats)
    new, old = aux["collections"]["vq_stats"]["vq"], stats["vq_stats"]["vq"]
    assert int(new["steps"]) == 1 and int(old["steps"]) == 0
    assert not np.array_equal(new["codebook"], old["codebook"])
    for k in ("recon_mse", "vq_loss", "commitment", "perplexity", "codes_used",
              "dead_fraction"):
        assert np.isfinite(float(aux[k])), k
    np.testing.assert_allclose(loss, aux["recon_mse"] + aux["vq_loss"], rtol=1e-6)
    assert 1 <= float(aux["codes_used"]) <= 16


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_codebook(devices):
    """5 steps with restarts on a batch of 16 split 8 ways: codebook, EMA statistics and
    parameters match the one-device run (restart draws and the EMA sums see the global
    batch; float32 sums in another order)."""
    del devices
    model = _model(quantizer="ema", restart=True, dead_threshold=0.5)
    states = {}
    for n in (1, 8):
        step, state, batch_sharding = _step(model, n)
        for i in range(5):
            batch = jax.device_put({"image": _images(10 + i)}, batch_sharding)
            state, m = step(state, batch, jax.random.key(4))
        assert step.num_traces == 1
        states[n] = jax.device_get(state)
    s1, s8 = states[1], states[8]
    v1, v8 = s1["collections"]["vq_stats"]["vq"], s8["collections"]["vq_stats"]["vq"]
    assert int(v1["steps"]) == 5
    for name in ("codebook", "count", "sum"):
        np.testing.assert_allclose(v8[name], v1[name], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s8["params"]), jax.tree.leaves(s1["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The statistics never reach the optimizer.
    assert set(s1["opt_state"][SINGLE][0].mu) == {"params"}


@pytest.mark.slow
def test_a_checkpoint_round_trip_restores_the_ema_statistics(tmp_path):
    model = _model(quantizer="ema", restart=True)
    step, state, batch_sharding = _step(model, 1)
    batches = [jax.device_put({"image": _images(20 + i)}, batch_sharding) for i in range(4)]
    for b in batches[:3]:
        state, _ = step(state, b, jax.random.key(5))
    ckpt = checkpoint.Checkpointer(str(tmp_path), save_every_steps=1, async_save=False)
    saved = jax.device_get(state)
    ckpt.save(3, state, {"next_batch": 3})
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                           sharding=a.sharding), state)
    step_no, restored, _ = ckpt.restore_latest(abstract)
    ckpt.close()
    assert step_no == 3
    stats = restored["collections"][quantizers.STATS]["vq"]
    assert int(stats["steps"]) == 3
    for a, b in zip(jax.tree.leaves(restored["collections"]),
                    jax.tree.leaves(saved["collections"]), strict=True):
        np.testing.assert_array_equal(a, b)
    # The restored run takes the same next step (same EMA update, same restart draws).
    cont, _ = step(state, batches[3], jax.random.key(5))
    again, _ = step(restored, batches[3], jax.random.key(5))
    for a, b in zip(jax.tree.leaves(cont["collections"]), jax.tree.leaves(again["collections"]),
                    strict=True):
        np.testing.assert_array_equal(a, b)
