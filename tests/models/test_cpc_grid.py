"""Patch-grid CPC (`models.cpc_grid`, `objectives.cpc` on a grid).

- the patches are the image's `patch` x `patch` windows at `stride` (direct slicing), the
  shapes of z, c and the W_k predictions, offsets from the first non-overlapping row;
- causality by Jacobian: c_{i,j} reads no pixel below row i stride + patch - 1 and reads
  that row ("rows" order), and for "column" order nothing outside its column's pixels;
- the grid loss is the NumPy InfoNCE of each anchor (b, i, j) against z_{., i+k, j}
  ("batch") or every position of every image ("both");
- on a planted structure (per-column sinusoids continuing down the rows) a tiny model's
  top-1 accuracy of the patch k rows below ends far above chance (slow);
- the FeatureExtractor protocol's shapes, one-line errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_gen.models import cpc_grid, protocols
from ssl_gen.objectives import cpc

TINY = dict(variant="tiny")  # 3x3 patches at stride 1: an 8x8 image is a 6x6 grid; K = 2
X = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))


def _init(model, x=X):
    return jax.jit(model.init)(jax.random.key(1), x)


def test_patches_shapes_and_offsets():
    model = cpc_grid.Model(**TINY)
    variables = _init(model)
    patches = np.asarray(model.apply(variables, X, method="patches"))
    assert patches.shape == (2, 6, 6, 9)
    x = np.asarray(X)
    for i, j in [(0, 0), (2, 5), (5, 3)]:
        np.testing.assert_array_equal(patches[:, i, j], x[:, i:i + 3, j:j + 3, 0].reshape(2, 9))
    assert model.offsets() == (3, 4)  # ceil(3 / 1) = 3: the first rows sharing no pixel
    assert cpc_grid.Model(**TINY, patch=4, stride=2, first_offset=1).offsets() == (1, 2)
    preds, aux = model.apply(variables, X)
    assert aux["z"].shape == (2, 6, 6, 8) and aux["c"].shape == (2, 6, 6, 8)
    assert preds.shape == (2, 2, 6, 6, 8)  # (K, B, R, S, Dz)
    w4 = variables["params"]["W_4"]["kernel"]
    np.testing.assert_allclose(preds[1], aux["c"] @ w4, rtol=1e-5, atol=1e-6)
    assert isinstance(model, protocols.FeatureExtractor)
    for pool, dim in [("z_mean", 8), ("c_mean", 8), ("z_grid", 6 * 6 * 8)]:
        m = cpc_grid.Model(**TINY, pool=pool)
        assert m.apply(variables, X, method="features").shape == (2, dim)


@pytest.mark.parametrize("order", cpc_grid.ORDERS)
def test_context_is_causal_by_jacobian(order):
    model = cpc_grid.Model(**TINY, order=order)
    variables = _init(model)
    v = jax.random.normal(jax.random.key(2), (8,))  # a direction (a LayerNorm'd c sums to 0)
    jac = np.asarray(jax.jit(jax.jacrev(
        lambda x: model.apply(variables, x)[1]["c"][0] @ v))(X[:1]))[..., 0, :, :, 0]
    assert jac.shape == (6, 6, 8, 8)  # (i, j) of c; (row, column) of the pixel
    for i in range(6):
        last = model.last_row(i)
        assert last == i + 2
        for j in range(6):
            np.testing.assert_array_equal(jac[i, j, last + 1:], 0.0)
            assert np.abs(jac[i, j, last]).max() > 1e-6, (i, j)  # it reads its last row
            outside = np.ones(8, bool)
            outside[j:j + 3] = False
            if order == "column":  # only its column's pixels, rows 0..last
                np.testing.assert_array_equal(jac[i, j][:, outside], 0.0)
                assert np.abs(jac[i, j, 0, j:j + 3]).max() > 1e-9
            elif i > 0:  # rows: every column of the rows above
                assert np.abs(jac[i, j][:last + 1][:, outside]).max() > 1e-9


def _np_infonce(a, y):
    """Mean over rows of -log softmax(a y^T)[diagonal], float64."""
    s = a @ y.T
    s = s - s.max(1, keepdims=True)
    return np.mean(np.log(np.exp(s).sum(1)) - np.diag(s))


@pytest.mark.parametrize("negatives", ["batch", "both"])
def test_grid_loss_is_the_numpy_infonce(negatives):
    model = cpc_grid.Model(**TINY)
    variables = _init(model)
    x = jax.random.normal(jax.random.key(5), (3, 8, 8, 1))
    loss, aux = jax.jit(lambda p, x: cpc.loss_fn(p, {"image": x}, None, model=model,
                                                  negatives=negatives, input_key="image")
                        )(variables, x)
    preds, out = model.apply(variables, x)
    preds, z = np.asarray(preds, np.float64), np.asarray(out["z"], np.float64)
    losses = []
    for n, k in enumerate(model.offsets()):
        anchors = preds[n][:, :6 - k].reshape(3, -1, 8)  # (B, (R - k) S, Dz)
        targets = z[:, k:].reshape(3, -1, 8)
        if negatives == "batch":  # per position, the images' targets at that position
            lk = np.mean([_np_infonce(anchors[:, p], targets[:, p])
                          for p in range(anchors.shape[1])])
            n_cand = 3
        else:
            lk = _np_infonce(anchors.reshape(-1, 8), targets.reshape(-1, 8))
            n_cand = anchors.shape[0] * anchors.shape[1]
        np.testing.assert_allclose(float(aux[f"loss_k{k}"]), lk, rtol=1e-5)
        np.testing.assert_allclose(float(aux[f"mi_k{k}"]), np.log(n_cand) - lk, rtol=1e-5)
        losses.append(lk)
    np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-5)


def planted(key, b):
    """Per-column sinusoids down the rows, x[r, c] = sin(f r + phi_c) + noise 0.05, f one of
    4 per image, phi_c uniform per column: the rows above fix the rows below up to the
    noise; nothing but the image itself tells one from another."""
    kf, kp, kn = jax.random.split(key, 3)
    f = jnp.array([0.4, 0.7, 1.0, 1.3])[jax.random.randint(kf, (b, 1, 1), 0, 4)]
    phase = jax.random.uniform(kp, (b, 1, 8), maxval=2 * jnp.pi)
    x = jnp.sin(f * jnp.arange(8)[None, :, None] + phase)
    return (x + 0.05 * jax.random.normal(kn, x.shape))[..., None]  # (B, 8, 8, 1)


@pytest.mark.slow
def test_grid_cpc_learns_a_planted_structure():
    """300 Adam steps (seed 0) on batches of 16 planted images, "batch" negatives (N = 16,
    chance 1/16), column order: the mean accuracy on fresh images ends above 0.5, eight
    times chance, starting at most 0.3 (measured: 0.064 -> 0.917)."""
    model = cpc_grid.Model(**TINY, widths=(32, 16), context_dim=16, order="column")
    params = model.init(jax.random.key(0), planted(jax.random.key(0), 2))
    tx = optax.adam(3e-3)
    opt = tx.init(params)
    loss = lambda p, x: cpc.loss_fn(p, {"image": x}, None, model=model, negatives="batch",
                                    input_key="image")

    @jax.jit
    def step(p, o, key):
        (_, aux), g = jax.value_and_grad(loss, has_aux=True)(p, planted(key, 16))
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    test_x = planted(jax.random.key(123), 16)
    acc = jax.jit(lambda p: loss(p, test_x)[1]["acc"])
    before = float(acc(params))
    for i in range(300):
        params, opt = step(params, opt, jax.random.fold_in(jax.random.key(1), i))
    after = float(acc(params))
    assert before <= 0.3 and after > 0.5, (before, after)


@pytest.mark.parametrize("kwargs, match", [
    (dict(patch=2, stride=3), "need patch >= stride >= 1"),
    (dict(order="raster"), "order='raster' is not one of"),
    (dict(pool="last"), "pool='last' is not one of"),
    (dict(num_steps=4), "a grid of 6 rows has no row 6 below the first"),
    (dict(variant="huge"), "unknown variant 'huge'"),
])
def test_bad_options_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        _init(cpc_grid.Model(**{**TINY, **kwargs}))
    assert "\n" not in str(e.value)


def test_an_image_that_does_not_tile_is_one_line():
    with pytest.raises(ValueError, match="a 8x8 image does not tile into 3x3 patches at "
                                         "stride 2"):
        _init(cpc_grid.Model(**TINY, stride=2))
