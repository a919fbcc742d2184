"""The critics score every pair: separable = g(x) . h(y), joint = the MLP on each [x_i, y_j]
one pair at a time; shapes (N, M) for unequal batches; an unknown kind is a one-line error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import critics


def _batches(n=3, m=4, dx=2, dy=5):
    kx, ky = jax.random.split(jax.random.key(0))
    return jax.random.normal(kx, (n, dx)), jax.random.normal(ky, (m, dy))


def test_separable_is_an_inner_product_of_embeddings():
    x, y = _batches()
    model = critics.Model(kind="separable", hidden=(8,), embed_dim=6)
    params = model.init(jax.random.key(1), x, y)
    scores, aux = model.apply(params, x, y)
    assert scores.shape == (3, 4) and aux["gx"].shape == (3, 6) and aux["hy"].shape == (4, 6)
    np.testing.assert_allclose(scores, aux["gx"] @ aux["hy"].T, rtol=1e-6)


def test_joint_scores_each_pair_like_one_forward_pass():
    x, y = _batches()
    model = critics.Model(kind="joint", hidden=(8, 8))
    params = model.init(jax.random.key(2), x, y)
    scores, _ = model.apply(params, x, y)
    for i in range(3):
        for j in range(4):
            one, _ = model.apply(params, x[i:i + 1], y[j:j + 1])  # a (1, 1) batch
            assert float(scores[i, j]) == pytest.approx(float(one[0, 0]), rel=1e-5, abs=1e-6)


def test_baseline_and_unknown_kind():
    _, y = _batches()
    baseline = critics.Baseline(hidden=(4,))
    assert baseline.apply(baseline.init(jax.random.key(3), y), y).shape == (4,)
    with pytest.raises(ValueError, match="unknown kind 'concat'; known: separable, joint"):
        critics.Model(kind="concat").init(jax.random.key(4), jnp.zeros((2, 1)),
                                          jnp.zeros((2, 1)))
