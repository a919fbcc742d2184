"""The test-accuracy eval counts every real example once (padding excluded), against a
direct count; the MAE reconstruction eval writes its figure and returns the masked loss of
its fixed mask, and its reconstruction inverts the norm_pix targets."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.data import InMemorySource, eval_batches
from ssl_gen.evals import accuracy, mae_images
from ssl_gen.evals.context import EvalContext
from ssl_gen.models import mae


class Linear(nn.Module):
    """(logits, aux) = (x @ W, {}): a classifier whose weights the test sets."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(3, use_bias=False)(x), {}


def test_accuracy_counts_each_real_example_once():
    r = np.random.default_rng(0)
    x = r.standard_normal((50, 3)).astype(np.float32)
    y = r.integers(0, 3, 50)
    w = r.standard_normal((3, 3)).astype(np.float32)
    source = InMemorySource({"x": x, "label": y})
    ctx = EvalContext(model=Linear(), rng=jax.random.key(0), step=0, workdir="",
                      eval_batches=lambda: eval_batches(source, 16),  # 50 = 3 x 16 + 2
                      train_source=source, eval_source=source)
    state = {"params": {"params": {"Dense_0": {"kernel": jnp.asarray(w)}}}, "collections": {}}
    out = accuracy.evaluate(state, ctx, field="x", prefix="test_")
    logits = x @ w
    assert out["test_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert out["test_nll"] == pytest.approx(-logp[np.arange(50), y].mean(), rel=1e-5)


MODEL = mae.Model(variant="tiny", image_size=8, channels=1)


@pytest.mark.slow
def test_mae_images_writes_the_grid_and_its_fixed_mask_loss(tmp_path):
    x = np.asarray(jax.random.uniform(jax.random.key(0), (20, 8, 8, 1)))
    variables = jax.jit(lambda k: MODEL.init(k, x[:1], key=k))(jax.random.key(1))
    source = InMemorySource({"image": x})
    ctx = EvalContext(model=MODEL, rng=jax.random.key(0), step=7, workdir=str(tmp_path),
                      eval_batches=None, train_source=source, eval_source=source)
    out = mae_images.evaluate({"params": variables, "collections": {}}, ctx, num=16,
                              norm_pix_loss=True, tensorboard=False)
    assert os.path.isfile(tmp_path / "plots" / "mae_reconstructions_step7.png")
    assert os.path.isfile(tmp_path / "plots" / "mae_reconstructions_latest.png")
    pred, aux = MODEL.apply(variables, jnp.asarray(x[:16]),
                            key=jax.random.key(mae_images.MASK_SEED))
    want = mae.reconstruction_loss(x[:16], pred, aux["mask"], 2, norm_pix_loss=True)
    assert out["mae_eval_loss"] == pytest.approx(float(want), rel=1e-5)
    recon, mask, _ = mae_images.reconstruct(MODEL, variables, x[:16], norm_pix_loss=True)
    assert recon.shape == (16, 8, 8, 1) and mask.shape == (16, 16)


def test_reconstruct_inverts_the_norm_pix_targets(monkeypatch):
    """A model predicting exactly the normalized targets reconstructs the image."""
    x = jax.random.uniform(jax.random.key(3), (4, 8, 8, 1))
    target = mae.patchify(x, 2)
    mean, var = target.mean(-1, keepdims=True), target.var(-1, keepdims=True, ddof=1)
    perfect = (target - mean) / jnp.sqrt(var + 1e-6)
    monkeypatch.setattr(mae_images, "_predict",
                        lambda v, x, k, **kw: (perfect, jnp.ones(x.shape[:1] + (16,))))
    recon, _, _ = mae_images.reconstruct(MODEL, None, x, norm_pix_loss=True)
    np.testing.assert_allclose(recon, x, atol=1e-5)
    raw, _, _ = mae_images.reconstruct(MODEL, None, x, norm_pix_loss=False)
    np.testing.assert_allclose(raw, mae.unpatchify(perfect, 2, (8, 8, 1)), atol=1e-6)
