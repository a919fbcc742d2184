"""CPC model: shapes of z, c and the W_k predictions; causality of the encoder and of the
context network (GRU and transformer), checked by the gradient of c_t with respect to the
input; the features of the FeatureExtractor protocol; one-line errors for bad shapes and
options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import cpc, protocols

TINY = dict(variant="tiny")  # widths (8, 8), kernels (4, 3), strides (2, 1), Dc 8, K 2
X = jax.random.normal(jax.random.key(0), (3, 16))  # (B, T): 8 frames of 2 steps


def init(model, x=X):
    return jax.jit(model.init)(jax.random.key(1), x)


@pytest.mark.parametrize("context", cpc.CONTEXTS)
def test_shapes(context):
    model = cpc.Model(**TINY, context=context, transformer_heads=2)
    variables = init(model)
    preds, aux = model.apply(variables, X)
    assert model.stride() == 2 and model.steps() == 2
    assert aux["z"].shape == (3, 8, 8) and aux["c"].shape == (3, 8, 8)
    assert preds.shape == (2, 3, 8, 8)  # (K, B, T', Dz)
    # predictions[k - 1] is W_k c: the k-th predictor's kernel applied to c.
    w2 = variables["params"]["W_2"]["kernel"]
    np.testing.assert_allclose(preds[1], aux["c"] @ w2, rtol=1e-5, atol=1e-6)
    # (B, T, C) inputs, and a wider last layer / context.
    wide = cpc.Model(**TINY, context=context, widths=(8, 5), context_dim=6, num_steps=3,
                     transformer_heads=2)
    x3 = jnp.ones((2, 16, 3))
    preds, aux = wide.apply(init(wide, x3), x3)
    assert preds.shape == (3, 2, 8, 5) and aux["c"].shape == (2, 8, 6)


@pytest.mark.parametrize("context", cpc.CONTEXTS)
def test_context_is_causal(context):
    """d c_t / d x_i is zero for every input i after last_input(t) = 2 (t + 1) - 1, and
    not zero at last_input(t) itself (so the check can fail either way)."""
    model = cpc.Model(**TINY, context=context, transformer_heads=2)
    variables = init(model)
    x = X[:1]
    v = jax.random.normal(jax.random.key(2), (8,))  # a direction (a LayerNorm'd c sums to 0)
    # Rows: frames t; columns: inputs i. One jitted Jacobian per output (c and z).
    jac = {name: np.asarray(jax.jit(jax.jacrev(
        lambda x, name=name: model.apply(variables, x)[1][name][0] @ v))(x)[:, 0])
        for name in ("c", "z")}
    assert jac["c"].shape == (8, 16)
    for t in range(8):
        last = model.last_input(t)
        assert last == 2 * t + 1
        np.testing.assert_array_equal(jac["c"][t, last + 1:], 0.0)
        assert abs(jac["c"][t, last]) > 1e-6, (t, jac["c"][t])
        # z_t, too: the encoder reads no input after its frame.
        np.testing.assert_array_equal(jac["z"][t, last + 1:], 0.0)
    # The context reads back to the start; the encoder's receptive field does not
    # (kernels 4, 3 at strides 2, 1: z_7 reads inputs 8..15 only).
    assert abs(jac["c"][7, 0]) > 1e-9
    np.testing.assert_array_equal(jac["z"][7, :8], 0.0)


def test_a_future_perturbation_leaves_the_past_context_unchanged():
    model = cpc.Model(**TINY)
    variables = init(model)
    x2 = X.at[:, 10:].add(5.0)  # inputs 10.. belong to frames 5..
    c1 = model.apply(variables, X)[1]["c"]
    c2 = model.apply(variables, x2)[1]["c"]
    np.testing.assert_array_equal(c1[:, :5], c2[:, :5])
    assert float(jnp.abs(c1[:, 5:] - c2[:, 5:]).max()) > 1e-3


def test_features_are_the_last_or_mean_context():
    model = cpc.Model(**TINY)
    assert isinstance(model, protocols.FeatureExtractor)
    variables = init(model)
    c = model.apply(variables, X)[1]["c"]
    feats = model.apply(variables, X, method=model.features)
    np.testing.assert_allclose(feats, c[:, -1], rtol=1e-6)
    mean = cpc.Model(**TINY, pool="mean")
    np.testing.assert_allclose(mean.apply(variables, X, method=mean.features), c.mean(1),
                               rtol=1e-5, atol=1e-6)


def test_mnist1d_variant_takes_the_dataset_field():
    model = cpc.Model()  # the mnist1d variant: 40 steps -> 10 frames
    x = jnp.zeros((2, 40))
    variables = init(model, x)
    preds, aux = model.apply(variables, x)
    assert aux["z"].shape == (2, 10, 64) and preds.shape == (3, 2, 10, 64)
    assert model.apply(variables, x, method=model.features).shape == (2, 128)


@pytest.mark.parametrize("kwargs, match", [
    (dict(context="lstm"), "context='lstm' is not one of"),
    (dict(pool="max"), "pool='max' is not one of"),
    (dict(variant="huge"), "unknown variant 'huge'"),
    (dict(kernels=(1, 3)), "each kernel must be >= its stride"),
    (dict(widths=(8,)), "one entry per conv layer"),
])
def test_bad_options_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cpc.Model(**{**TINY, **kwargs}).init(jax.random.key(0), X)


def test_bad_input_shapes_are_one_line_errors():
    model = cpc.Model(**TINY)
    with pytest.raises(ValueError, match="not a positive multiple of the encoder's total "
                                         "stride 2"):
        model.init(jax.random.key(0), jnp.zeros((2, 15)))
    with pytest.raises(ValueError, match=r"must be \(B, T\) or \(B, T, C\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 4, 4, 1)))
