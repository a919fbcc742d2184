"""MoCo v2 (`objectives.contrastive`, method "moco_v2"): the queue and the loss.

- Through the real jitted step, the queue after N steps is a NumPy FIFO of the keys (each
  step's keys recomputed here from the momentum encoder *before* that step, unit-normalized),
  wrapping around K = 2B, with the pointer at (N B) mod K; the momentum encoder follows
  target <- m target + (1 - m) online with the constant m;
- the loss is CE([q.k, q.queue^T] / T, 0) (NumPy), its accuracy the fraction of queries
  whose key beats every queue entry; no gradient reaches the queue or the key encoder;
- the queue is in `extra`, so it is checkpointed: a save / restore returns it and its pointer;
- 8 devices equal 1 (keys of the global batch enqueued; slow: two compiles);
- bad settings are one-line ValueErrors.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ssl_gen.models import contrastive as cmodel
from ssl_gen.objectives import contrastive as cobj
from ssl_gen.train import checkpoint, sharding
from ssl_gen.train import objective as objective_lib
from ssl_gen.train.step import TrainStep, init_state

TINY = dict(stem_width=4, widths=(4, 8), blocks=1, projector_hidden=16, projector_out=8,
            projector_norm=False)
B, K, T, M = 8, 16, 0.2, 0.9


def _views(seed, b=B):
    return jax.random.uniform(jax.random.key(seed), (b, 2, 8, 8, 1))


def _setup(b=B, k=K, m=M):
    model = cmodel.Model(**TINY)
    kwargs = dict(method="moco_v2", temperature=T, tau_base=m, queue_size=k, batch_size=b)
    cfg = ml_collections.ConfigDict({"objective": {"name": "contrastive", "kwargs": kwargs}})
    obj = objective_lib.resolve(cfg, model)
    tx = optax.sgd(0.5, momentum=0.9)
    init = lambda key: init_state(model.init(key, jnp.zeros((1, 8, 8, 1))), obj, {"model": tx})
    return model, obj, tx, jax.device_get(jax.jit(init)(jax.random.key(1)))


def _step(obj, tx, state, num_devices):
    mesh = sharding.make_mesh(num_devices)
    shard = sharding.state_shardings(jax.eval_shape(lambda: state), mesh)
    step = TrainStep(obj, {"model": tx}, state_sharding=shard,
                     batch_sharding=sharding.batch_sharded(mesh),
                     replicated=sharding.replicated(mesh))
    return step, mesh, jax.device_put(jax.tree.map(jnp.array, state), shard)


@functools.partial(jax.jit, static_argnums=0)
def _project(model, variables, x):
    return model.apply(variables, x, train=True, mutable=["batch_stats"], method="project")[0]


def _keys(model, target, collections, views):
    """The momentum encoder's unit projections of the second views, in float64."""
    k = np.asarray(_project(model, target | collections, views[:, 1])[1], np.float64)
    return k / np.linalg.norm(k, axis=-1, keepdims=True)


def test_queue_is_a_fifo_of_the_keys_and_the_target_an_ema():
    model, obj, tx, state = _setup()
    queue = np.asarray(state["extra"]["queue"], np.float64)
    np.testing.assert_allclose(np.linalg.norm(queue, axis=1), 1.0, rtol=1e-6)  # unit init
    assert int(state["extra"]["queue_ptr"]) == 0
    step, _, state = _step(obj, tx, state, 1)
    target = jax.tree.map(lambda a: np.asarray(a, np.float64),
                          jax.device_get(state["extra"]["target"]))
    for n in range(5):  # K = 2B: the queue wraps after two steps
        views = _views(10 + n)
        before = jax.device_get(state)
        keys = _keys(model, before["extra"]["target"], before["collections"], views)
        state, m = step(state, {"views": views}, jax.random.key(0))
        queue = np.concatenate([queue[B:], keys])  # NumPy FIFO: the oldest B out, keys in
        ptr = int(state["extra"]["queue_ptr"])
        assert ptr == ((n + 1) * B) % K
        # The stored queue is a ring buffer whose oldest entry is at ptr.
        got = np.roll(np.asarray(state["extra"]["queue"], np.float64), -ptr, axis=0)
        np.testing.assert_allclose(got, queue, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(m["tau"]), M, rtol=1e-7)
        online = jax.device_get(state["params"])
        target = jax.tree.map(lambda t, o: M * t + (1 - M) * np.asarray(o, np.float64),
                              target, online)
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6),
                     jax.device_get(state["extra"]["target"]), target)
    # What the test tells apart: after 5 steps no entry of the initial queue is left and the
    # keys of steps 4 and 5 differ (a queue that never moved, or repeated one batch, fails).
    assert np.abs(queue[:B] - queue[B:]).max() > 1e-3


def _np_loss(q, k, queue, temp):
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    q, k = unit(q), unit(k)
    logits = np.concatenate([np.sum(q * k, -1, keepdims=True), q @ queue.T], 1) / temp
    shifted = logits - logits.max(1, keepdims=True)
    ce = np.log(np.exp(shifted).sum(1)) - shifted[:, 0]
    return ce.mean(), np.mean(np.argmax(logits, 1) == 0)


def test_loss_is_infonce_against_the_queue_and_no_gradient_reaches_it():
    model, obj, _, state = _setup()
    params, collections = state["params"], state["collections"]
    noise = jax.random.key(4)
    target = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(noise, p.shape), params)
    extra = {**state["extra"], "target": target}
    views = _views(3)

    ptr = extra.pop("queue_ptr")  # an int: not differentiated

    def loss(params, extra):
        return cobj.loss_fn(params, {"views": views}, None, model=model,
                            collections=collections, extra={**extra, "queue_ptr": ptr},
                            step=0, method="moco_v2",
                            temperature=T, tau_base=M, queue_size=K, batch_size=B)

    (value, aux), (g_params, g_extra) = jax.jit(jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True))(params, extra)
    (_, out), _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        params | collections, views[:, 0])
    q = np.asarray(out["projection"], np.float64)
    k = _keys(model, target, collections, views)
    want, acc = _np_loss(q, k, np.asarray(extra["queue"], np.float64), T)
    np.testing.assert_allclose(float(value), want, rtol=1e-5)
    assert float(aux["contrastive_acc"]) == acc
    np.testing.assert_allclose(aux["extra"]["keys"], k, rtol=1e-5, atol=1e-6)
    for g in jax.tree.leaves(g_extra):
        assert not np.any(np.asarray(g))  # the queue, the keys and the key encoder
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(g_params)) > 0
    # What the test tells apart: a different queue gives a different loss.
    other = {**extra, "queue": -extra["queue"]}
    assert abs(float(jax.jit(loss)(params, other)[0]) - want) > 1e-3


def test_the_queue_is_checkpointed(tmp_path):
    _, obj, tx, state = _setup()
    step, _, state = _step(obj, tx, state, 1)
    for n in range(3):
        state, _ = step(state, {"views": _views(n)}, jax.random.key(0))
    assert {"queue", "queue_ptr", "keys", "target"} <= set(state["extra"])
    ckpt = checkpoint.Checkpointer(str(tmp_path), save_every_steps=1, async_save=False)
    ckpt.save(3, state, {"epoch": 0})
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                           sharding=a.sharding), state)
    _, restored, _ = ckpt.restore_latest(abstract)
    ckpt.close()
    assert int(restored["extra"]["queue_ptr"]) == (3 * B) % K == 8
    for a, b in zip(jax.tree.leaves(restored["extra"]), jax.tree.leaves(state["extra"]),
                    strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # two compiles of the train step (1 and 8 devices)
def test_8_devices_equal_1():
    _, obj, tx, state0 = _setup(b=16, k=32)
    out = {}
    for n in (1, 8):
        step, mesh, state = _step(obj, tx, state0, n)
        for i in range(3):
            batch = jax.device_put({"views": _views(20 + i, 16)}, sharding.batch_sharded(mesh))
            state, m = step(state, batch, jax.random.key(0))
        out[n] = jax.device_get((state["extra"], state["params"], m))
    e1, p1, m1 = out[1]
    e8, p8, m8 = out[8]
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    assert int(e8["queue_ptr"]) == int(e1["queue_ptr"]) == 16
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    jax.tree.map(close, e8, e1)  # every device's keys enqueued, in global-batch order
    jax.tree.map(close, p8, p1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(queue_size=20, batch_size=8), "queue_size=20 must be a positive multiple of "
                                        "batch_size=8"),
    (dict(queue_size=16, batch_size=None), "needs batch_size=None as an int"),
])
def test_bad_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        cobj.check("moco_v2", 0.2, 0.99, 10, "views", None, **kwargs)
    assert "\n" not in str(e.value)


def test_batch_size_must_be_the_global_batch_and_no_predictor():
    model, _, _, state = _setup()
    with pytest.raises(ValueError, match="moco_v2's batch_size=8 but the batch has 4"):
        cobj.loss_fn(state["params"], {"views": _views(0, 4)}, None, model=model,
                     collections=state["collections"], extra=state["extra"], step=0,
                     method="moco_v2", queue_size=K, batch_size=B)
    with pytest.raises(ValueError, match="method='moco_v2' has no predictor"):
        cobj.check("moco_v2", 0.2, 0.99, 10, "views", cmodel.Model(**TINY, predictor_hidden=8),
                   queue_size=K, batch_size=B)
