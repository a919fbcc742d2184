"""The reconstruction eval (ssl_gen.evals.reconstruction) against a direct NumPy computation:
MSE of the clipped reconstruction, mean per-image PSNR and SSIM over the whole split,
padding excluded (so the batch size does not matter), and the grid it writes."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.evals import EvalContext, reconstruction
from ssl_gen.models import perceptual, vqgan


def _source(n):
    images = np.asarray(jax.random.randint(jax.random.key(1), (n, 16, 16, 3), 0, 256), np.uint8)
    return [{"image": im} for im in images]


def _batches(source, size):
    def gen():
        for start in range(0, len(source), size):
            part = [s["image"] for s in source[start:start + size]]
            mask = np.zeros(size, np.float32)
            mask[:len(part)] = 1.0
            part += [np.full((16, 16, 3), 255, np.uint8)] * (size - len(part))
            yield {"image": np.stack(part), "example_mask": mask}
    return gen


def _edges(x):  # sum of |forward differences| along both axes, the whole split
    return float(np.abs(np.diff(x, axis=1)).sum() + np.abs(np.diff(x, axis=2)).sum())


def test_gradient_ratio_is_one_for_the_data_below_for_blur_above_for_noise():
    u = np.asarray(jax.random.uniform(jax.random.key(0), (4, 16, 16, 3)))
    blur = (u + np.roll(u, 1, 1) + np.roll(u, 1, 2) + np.roll(u, (1, 1), (1, 2))) / 4
    noise = np.clip(u + 0.3 * np.asarray(jax.random.normal(jax.random.key(1), u.shape)), 0, 1)
    ones = jnp.ones(4)
    ratio = lambda x: float(reconstruction._batch_sums(jnp.asarray(x), jnp.asarray(u), ones)[
        "edges_reconstruction"]) / _edges(u)
    assert abs(ratio(u) - 1.0) < 1e-6  # float32 sums against float64 ones
    assert ratio(blur) < 0.6 and ratio(noise) > 1.1
    np.testing.assert_allclose(ratio(blur), _edges(blur) / _edges(u), rtol=1e-5)


def test_mse_psnr_ssim_over_the_split_match_numpy_and_the_grid_is_written(tmp_path):
    model = vqgan.Model(variant="tiny", image_shape=(16, 16, 3), quantizer="vq")
    test = _source(10)
    x = jnp.asarray(np.stack([s["image"] for s in test]))
    v = model.init(jax.random.key(2), x[:1])
    state = {"params": {"params": v["params"]}, "collections": {}}
    x_hat, aux = model.apply(v, x)
    x_hat, u = np.clip(np.asarray(x_hat), 0, 1), np.asarray(aux["target"])
    mse = ((x_hat - u) ** 2).reshape(10, -1).mean(-1)
    want = {"mse_clipped": mse.mean(), "psnr": np.mean(-10 * np.log10(mse)),
            "ssim": float(np.mean(perceptual.ssim(jnp.asarray(x_hat), jnp.asarray(u)))),
            "gradient_ratio": _edges(x_hat) / _edges(u)}
    for size in (4, 10):
        ctx = EvalContext(model=model, rng=jax.random.key(3), step=7, workdir=str(tmp_path),
                          eval_batches=_batches(test, size), train_source=test,
                          eval_source=test)
        got = reconstruction.evaluate(state, ctx, num=8, tensorboard=False)
        assert set(got) == set(want)
        for k, w in want.items():
            np.testing.assert_allclose(got[k], w, rtol=1e-4)
    assert os.path.exists(tmp_path / "plots" / "reconstructions_step7.png")
    assert os.path.exists(tmp_path / "plots" / "reconstructions_latest.png")
