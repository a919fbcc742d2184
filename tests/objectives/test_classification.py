"""The classification objective: smoothed cross-entropy and accuracy against NumPy, padded
examples excluded, one trace under jit with a ViT, and its kwargs pass the config check."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssl_gen.models import vit
from ssl_gen.objectives import classification
from ssl_gen.train import objective
from ssl_gen.train.config_check import ConfigError


def _numpy_ce(logits, labels, eps):
    c = logits.shape[1]
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = np.eye(c)[labels] * (1 - eps) + eps / c
    return -(target * logp).sum(1)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_accuracy_and_padding_against_numpy(eps):
    r = np.random.default_rng(0)
    logits = r.standard_normal((6, 5)).astype(np.float32) * 3
    labels = r.integers(0, 5, 6)
    w = np.array([1, 1, 1, 1, 0, 0], np.float32)
    loss, nll, acc = classification.cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                                  label_smoothing=eps, weights=jnp.asarray(w))
    np.testing.assert_allclose(loss, _numpy_ce(logits, labels, eps)[:4].mean(), rtol=1e-5)
    np.testing.assert_allclose(nll, _numpy_ce(logits, labels, 0.0)[:4].mean(), rtol=1e-5)
    assert float(acc) == pytest.approx(np.mean(logits[:4].argmax(1) == labels[:4]))
    if eps:  # smoothing raises the loss of a confident correct prediction
        sure = jnp.asarray([[20.0, 0.0]])
        lo = classification.cross_entropy(sure, jnp.asarray([0]))[0]
        hi = classification.cross_entropy(sure, jnp.asarray([0]), label_smoothing=eps)[0]
        assert float(hi) > float(lo) + 0.5


@pytest.mark.slow
def test_loss_fn_with_a_vit_traces_once_and_ignores_padding():
    model = vit.Model(variant="tiny/2", image_size=8, num_classes=10, pool="gap")
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    params = jax.jit(model.init)(jax.random.key(1), x)
    traces = [0]

    def f(p, b, k):
        traces[0] += 1
        return classification.loss_fn(p, b, k, model=model, label_smoothing=0.1)

    f = jax.jit(f)
    em = jnp.array([1.0, 1.0, 1.0, 0.0])
    batch = {"image": x, "label": jnp.array([1, 2, 3, 4]), "example_mask": em}
    a, aux = f(params, batch, jax.random.key(2))
    b, _ = f(params, {**batch, "label": jnp.array([1, 2, 3, 9]),
                      "image": x.at[3].set(50.0)}, jax.random.key(2))
    assert traces[0] == 1 and float(a) == pytest.approx(float(b), rel=1e-6)
    assert set(aux) == {"accuracy", "nll"}
    with pytest.raises(ValueError, match="no field 'label'"):
        classification.loss_fn(params, {"image": x}, jax.random.key(0), model=model)


def test_config_check_accepts_its_kwargs_and_refuses_others():
    cfg = ml_collections.ConfigDict({"objective": {"name": "classification", "kwargs": {
        "label_smoothing": 0.1, "input_key": "image", "label_key": "label"}}})
    objective.check_config(cfg)
    cfg.objective.kwargs.smoothing = 0.1
    with pytest.raises(ConfigError, match="smoothing"):
        objective.check_config(cfg)
